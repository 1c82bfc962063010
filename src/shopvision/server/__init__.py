"""Running tritonserver: the local server from the ``nvidia-pytriton`` wheel, the container image's entry
point, and the deployment limits derived from the contract (gateway, Helm, compose). The local server needs
the ``server`` extra; the SDK never imports it."""

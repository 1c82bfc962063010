"""What runs inside tritonserver's Python backend: the ``preprocess`` model's preprocessing and the ``cpu``
configuration's inference engines. Imports only the contract, the errors and numpy, Pillow and the engines
(``tests/test_layout.py`` holds it to that), because Triton's Python stub loads it with nothing else."""

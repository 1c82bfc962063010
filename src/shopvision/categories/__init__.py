"""The shop's own categories: a linear head trained on frozen embeddings, served inside the ensemble.

``shopvision categories train`` reads labelled photos (:mod:`.dataset`), embeds them through the server
or takes their vectors from a catalog (:mod:`.embedding`), fits and evaluates a multinomial logistic
regression (:mod:`.training`, scikit-learn) and exports it as a Gemm and a Softmax (:mod:`.export`);
:mod:`shopvision.repository.heads` installs it as a version of the ``categories`` model and promotes it.
"""

"""Serving a trained run over HTTP: ``seqlab serve RUN_DIR`` (see ``seqlab.serve.app``)."""

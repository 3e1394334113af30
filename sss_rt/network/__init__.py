"""The hypercolumn network in PyTorch (``model``) and its checkpoints (``checkpoint``): what
the torch backend, the export and the training share. Training itself is ``sss_rt.training``."""

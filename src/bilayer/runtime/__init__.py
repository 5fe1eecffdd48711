"""The deployed avatar: making it from a photo (avatar.py), baking its per-frame network (bake.py) and running it
(forms.py, precision.py, native.py, backends.py), and exporting it to ONNX (export.py). The animation application
that drives it is the ``bilayer.animate`` package."""

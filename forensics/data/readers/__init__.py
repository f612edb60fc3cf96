"""Readers of the layouts beyond the folder conventions (one module each); registered in
:data:`forensics.data.layouts.LAYOUTS`."""

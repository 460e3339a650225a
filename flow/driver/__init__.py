"""The PYNQ driver of the accelerator, shipped in the deployment package as ``driver/``.

It follows FINN's PYNQ driver (``FINNDMAOverlay`` of finn-plus-driver, the
``driver_base.py`` FINN's ``MakePYNQDriver`` used to generate): an ``Overlay``
subclass with ``allocate``'d packed in/out buffers, the input and output DMA
engines, ``execute``, ``execute_on_buffers``, ``throughput_test`` and
``batch_size``, and FINN's own ``finnpy_to_packed_bytearray`` packing.

- ``packing``: FINN's I/O conventions (``io_shape_dict``, folding, packing); no board dependency.
- ``overlay``: the board path; imports ``pynq``, so it is imported only there.
- ``check.py``: not part of the driver; ``flow.deploy`` puts it at the package root.
"""

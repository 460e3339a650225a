"""bnn-flow: binarized neural networks from Brevitas training to bit-exact FINN
dataflow accelerators on PYNQ boards.

One module per pipeline stage, each with one entry function that reads
artifacts on disk and writes artifacts on disk:

    flow.train.train      -> checkpoint.pt, train_metrics.json, training_curve.png
    flow.export.export    -> model.onnx (QONNX)
    flow.build.build      -> intermediate_models/, report/, folding_config.json
"""

__version__ = "0.1.0"

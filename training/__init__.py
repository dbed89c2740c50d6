"""CANNe training: corpus building, the autoencoder, training, ONNX export, reports.

May use torch (extra ``train``). The runtime (``daemon``) never imports this package.
"""

__version__ = "0.1.0"

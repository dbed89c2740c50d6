"""CANNe Live runtime: engine, phase, voices, mappings, MIDI and audio adapters.

Never imports torch or the ``training`` package; the ONNX files and their
metadata are the only thing shared with training.
"""

__version__ = "0.1.0"

"""The synthesis core: engine, voices, pitch, phase (RTPGHI), DSP, the ONNX models and
their contract, the ANNe effect. Called with numbers; imports nothing above it
(docs/architecture.md).
"""

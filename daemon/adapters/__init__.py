"""The outside world: MIDI input (rtmidi), audio output (sounddevice), OSC (UDP), MIDI
files (mido), pictures (PNG). Imports only the shared modules of ``daemon``.
"""

"""The control side: mappings (YAML), the Mapper (MIDI message -> engine call), LFOs and
clock, hot reload, learn, snapshots. Imports the core, never an adapter or a process.
"""

"""The processes: the ``canne`` command, the live instrument and its control loop, the
supervisor, ``canne render`` and ``canne process``, the console. Imports everything below.
"""

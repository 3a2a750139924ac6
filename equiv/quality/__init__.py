"""equiv checking itself: planted bugs (selftest), false-alarm sweeps over seeds, and the
conformance kits that third-party backends and cases run against themselves.
"""

"""Pure protocol code: decoders and encoders, no I/O and no clock."""

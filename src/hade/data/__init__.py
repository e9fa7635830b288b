"""Audio IO, data-set readers and the SynthCaps generator."""

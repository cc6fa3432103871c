"""Synthetic flights: `generate_flight(out_dir, seed, seconds, drones, birds)` writes a flight folder."""
from pipeline.synth.writer import generate_flight

__all__ = ["generate_flight"]

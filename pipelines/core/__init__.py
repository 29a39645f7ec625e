"""The foundation every stage, recipe and the orchestration import: row contract, stage base, config base,
images, faults, cache, engines. Imports nothing above it."""

"""The world benchmark: trains the four systems on the affective world and scores them with its oracles."""

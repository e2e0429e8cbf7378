-- A consumer's checkpoint by name ($1).
SELECT positions, state FROM checkpoints WHERE name = $1

-- Saves a checkpoint: name ($1), positions as JSON ($2), state ($3); replaces an older one.
INSERT INTO checkpoints (name, positions, state) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET positions = excluded.positions, state = excluded.state

"""Cache keys: stable content hashing of inputs and task identity."""

"""Records as the edge loads them: Braze's field rules (schemas, fields, currencies), transformed routes."""

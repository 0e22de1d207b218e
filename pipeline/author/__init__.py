"""Stage A of the flow: authoring scenarios, procedurally (offline) or with a teacher model."""

"""Pure data shared by every miniray process: IDs, task specs, resources,
serialization and configuration. Nothing in this package does I/O."""

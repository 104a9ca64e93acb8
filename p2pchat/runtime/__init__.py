"""asyncio glue: drives the sans-IO core with real time, sockets and storage."""

"""The generated Python code of ``proto/`` (``_proto``): for clients, tests and tools. The server
itself answers on the Rust data plane; the control plane only builds ``ModelInfo`` messages."""

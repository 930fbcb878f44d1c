"""Stand-ins of the real services the project talks to, for tests only (importable as
`standins.<module>`; pytest.ini puts tests/ on the path). Each module says which real API it
models and cites the documentation its answers and refusals follow."""

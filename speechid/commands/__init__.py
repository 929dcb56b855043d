"""Click commands, one module per part. They validate paths and forward keywords to the library."""

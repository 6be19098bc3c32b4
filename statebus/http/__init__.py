"""HTTP transports: Braid-HTTP (``braid``), Server-Sent Events (``sse``) and the Starlette app around them."""

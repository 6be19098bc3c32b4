"""Hosted apps: key patterns and grants (:mod:`.patterns`), the app spec (:mod:`.spec`), the sandbox
that runs their JavaScript or raw-wasm handlers (:mod:`.sandbox`) and the wiring of validate,
derive, on_write and JSON Schema handlers into the node (:mod:`.handlers`). See docs/apps.md."""

"""The runtime room: what a training script imports. No pandas, no tree-sitter, no git bindings at import."""

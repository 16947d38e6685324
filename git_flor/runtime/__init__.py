"""The runtime room: what a training script imports. No pandas, no tree-sitter, no pygit2 at import."""

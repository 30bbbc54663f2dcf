"""Small pieces shared by every CLI package: subcommand dispatch and YAML-backed dataclass configs."""

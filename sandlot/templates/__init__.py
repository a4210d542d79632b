"""Template rootfs builders."""

{
  "targets": [
    {
      "target_name": "guestlink_vsock",
      "sources": ["vsock.c"],
      "cflags": ["-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["vsock.c"] }]
      ]
    },
    {
      "target_name": "guestlink_slab",
      "sources": ["slab.c"],
      "cflags": ["-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["slab.c"] }]
      ]
    },
    {
      "target_name": "guestlink_spawn",
      "sources": ["spawn.c"],
      "cflags": ["-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-ldl"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["spawn.c"] }]
      ]
    }
  ]
}

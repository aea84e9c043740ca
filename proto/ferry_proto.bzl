"""ferry_cc_grpc_library: C++ protobuf and gRPC code from .proto files.

Runs Debian's `protoc` and `grpc_cpp_plugin` in a genrule (Bazel 4 offline has
no rules_proto). Import paths are relative to //proto, so a file
`proto/ferry/v1/x.proto` is imported as "ferry/v1/x.proto" and its generated
header is included as "ferry/v1/x.pb.h".
"""

def ferry_cc_grpc_library(name, srcs, deps = [], grpc = True, visibility = None):
    """Generates and compiles the C++ code of `srcs`.

    Args:
      name: the cc_library's name.
      srcs: .proto files in this package (under proto/).
      deps: other ferry_cc_grpc_library targets whose protos `srcs` import.
      grpc: also run grpc_cpp_plugin for the services in `srcs`.
      visibility: of the cc_library.
    """
    stems = [s[:-len(".proto")] for s in srcs]
    outs = []
    for stem in stems:
        outs += [stem + ".pb.h", stem + ".pb.cc"]
        if grpc:
            outs += [stem + ".grpc.pb.h", stem + ".grpc.pb.cc"]
    dep_protos = [d + "_protos" for d in deps]
    native.filegroup(
        name = name + "_protos",
        srcs = srcs + dep_protos,
        visibility = visibility,
    )
    cmd = "protoc -I$$(dirname $(location //proto:ferry_proto.bzl)) -I/usr/include"
    cmd += " --cpp_out=$(GENDIR)/proto"
    if grpc:
        cmd += " --grpc_out=$(GENDIR)/proto --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)"
    cmd += " " + " ".join(["$(location %s)" % s for s in srcs])
    native.genrule(
        name = name + "_gen",
        srcs = srcs + dep_protos + ["//proto:ferry_proto.bzl"],
        outs = outs,
        cmd = cmd,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc"] if grpc else []),
        visibility = visibility,
    )

# Writes torch-format checkpoints without torch, for tests/it/pickle.rs.
# Stand-in classes carry the module and names torch.save emits; persistent_id emits storage ids.
import collections, io, os, pickle, struct, sys, types, zipfile, array

out = sys.argv[1]

# Stand-in modules so pickle emits the same globals torch.save does.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils
torch._utils = utils

def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2

def storage_class(name):
    cls = type(name, (), {})
    cls.__module__ = "torch"
    setattr(torch, name, cls)
    return cls

FloatStorage = storage_class("FloatStorage")
HalfStorage = storage_class("HalfStorage")
LongStorage = storage_class("LongStorage")

class Storage:
    def __init__(self, kind, key, data):
        self.kind, self.key, self.data = kind, key, data  # data: raw little-endian bytes

class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, self.args)

def f32(*xs): return struct.pack("<%df" % len(xs), *xs)
def f16(*xs): return struct.pack("<%de" % len(xs), *xs)
def i64(*xs): return struct.pack("<%dq" % len(xs), *xs)
SIZES = {FloatStorage: 4, HalfStorage: 2, LongStorage: 8}

def state():
    s_a = Storage(FloatStorage, "0", f32(*range(6)))
    s_h = Storage(HalfStorage, "1", f16(1.0, -2.0, 0.5, 65504.0))
    s_i = Storage(LongStorage, "2", i64(1, -2, 1 << 40))
    s_tied = Storage(FloatStorage, "3", f32(*[float(10 + i) for i in range(10)]))
    s_t = Storage(FloatStorage, "4", f32(0, 1, 2, 3, 4, 5))
    sd = collections.OrderedDict()
    sd["a.weight"] = Tensor(s_a, 0, [2, 3], [3, 1])
    sd["b.half"] = Tensor(s_h, 0, [4], [1])
    sd["c.ids"] = Tensor(s_i, 0, [3], [1])
    sd["tied.first"] = Tensor(s_tied, 0, [4], [1])
    sd["tied.second"] = Tensor(s_tied, 4, [2, 3], [3, 1])
    sd["t.transposed"] = Tensor(s_t, 0, [3, 2], [1, 3])
    sd["module.scalar"] = Tensor(s_a, 5, [], [])
    return sd

def pickle_with_ids(obj, pid, protocol):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=protocol)
    p.persistent_id = pid
    p.dump(obj)
    return buf.getvalue()

def write_zip(path, top, protocol):
    storages = {}
    def pid(obj):
        if isinstance(obj, Storage):
            storages[obj.key] = obj
            return ("storage", obj.kind, obj.key, "cpu", len(obj.data) // SIZES[obj.kind])
        return None
    data = pickle_with_ids(top, pid, protocol)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/byteorder", "little")
        for key, s in sorted(storages.items()):
            z.writestr("archive/data/" + key, s.data)
        z.writestr("archive/version", "3\n")

# 1. zip, protocol 2, state dict nested under `state_dict` with non-tensor entries.
write_zip(os.path.join(out, "nested.pt"),
          {"epoch": 3, "name": "run", "optimizer": {"lr": 0.1, "betas": (0.9, 0.99)},
           "state_dict": state()}, 2)
# 2. zip, protocol 4, plain state dict (as pytorch_model.bin).
write_zip(os.path.join(out, "plain.bin"), state(), 4)

# 3. legacy (torch < 1.6) stream, with a storage view.
def write_legacy(path):
    root = Storage(FloatStorage, "140", f32(*[float(i) for i in range(8)]))
    longs = Storage(LongStorage, "141", i64(7, 8, 9))
    storages = {}
    def pid(obj):
        if isinstance(obj, Storage):
            storages[obj.key] = obj
            return ("storage", obj.kind, obj.key, "cpu", len(obj.data) // SIZES[obj.kind], None)
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "VIEW":
            storages[root.key] = root
            return ("storage", FloatStorage, root.key, "cpu", 8, ("150", 2, 4))
        return None
    view = ("VIEW", 0)
    sd = collections.OrderedDict()
    sd["x"] = Tensor(root, 0, [2, 4], [4, 1])
    sd["y"] = Tensor(longs, 1, [2], [1])
    sd["v"] = Tensor(view, 1, [3], [1])  # elements 3, 4, 5 of root
    with open(path, "wb") as f:
        for header in (0x1950a86a20f9469cfc6c, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(pickle_with_ids(sd, pid, 2))
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for k in keys:
            s = storages[k]
            f.write(struct.pack("<q", len(s.data) // SIZES[s.kind]))
            f.write(s.data)
write_legacy(os.path.join(out, "legacy.pt"))

# 4. a malicious pickle inside a torch zip.
marker = os.path.join(out, "pwned")
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + marker,))
write_zip(os.path.join(out, "evil.pt"), {"w": Evil()}, 2)

# 4. a tiny BERT as a model directory (pytorch_model.bin + config.json), for convert round trips.
def write_bert(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    emb = Storage(FloatStorage, "0", f32(*[0.25 * i - 1.0 for i in range(12)]))
    q = Storage(FloatStorage, "1", f32(*[0.125 * i for i in range(16)]))
    ids = Storage(LongStorage, "2", i64(0, 1, 2))
    sd = collections.OrderedDict()
    sd["bert.embeddings.word_embeddings.weight"] = Tensor(emb, 0, [3, 4], [4, 1])
    sd["bert.encoder.layer.0.attention.self.query.weight"] = Tensor(q, 0, [4, 4], [1, 4])
    sd["bert.encoder.layer.0.attention.self.query.bias"] = Tensor(q, 12, [4], [1])
    sd["bert.embeddings.position_ids"] = Tensor(ids, 0, [1, 3], [3, 1])
    write_zip(os.path.join(dirpath, "pytorch_model.bin"), sd, 2)
    with open(os.path.join(dirpath, "config.json"), "w") as f:
        f.write('{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4, '
                '"num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 3}')
write_bert(os.path.join(out, "bert"))

# Rewrites an f32 safetensors file as a torch.save-style `checkpoint.pth` zip whose state dict
# sits under `model` next to training state, as the official TLEG code saves it. No torch is
# needed: stand-in classes carry the module and names torch.save emits (as in pickle_gen.py).
import collections, io, json, pickle, struct, sys, types, zipfile

src, out = sys.argv[1], sys.argv[2]

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils
torch._utils = utils

def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2

class FloatStorage:
    pass
FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage

class Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data

class Tensor:
    def __init__(self, storage, shape):
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        self.args = (storage, 0, tuple(shape), tuple(stride), False, collections.OrderedDict())
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, self.args)

with open(src, "rb") as f:
    raw = f.read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
sd = collections.OrderedDict()
for i, (name, info) in enumerate(sorted((k, v) for k, v in header.items() if k != "__metadata__")):
    assert info["dtype"] == "F32", name
    start, end = info["data_offsets"]
    sd[name] = Tensor(Storage(str(i), data[start:end]), info["shape"])

storages = {}
def pid(obj):
    if isinstance(obj, Storage):
        storages[obj.key] = obj
        return ("storage", FloatStorage, obj.key, "cpu", len(obj.data) // 4)
    return None

buf = io.BytesIO()
p = pickle.Pickler(buf, protocol=2)
p.persistent_id = pid
p.dump({"model": sd, "epoch": 149, "optimizer": {"lr": 5e-4}, "scaler": {"scale": 65536.0}})
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    z.writestr("checkpoint/data.pkl", buf.getvalue())
    z.writestr("checkpoint/byteorder", "little")
    for key, s in sorted(storages.items()):
        z.writestr("checkpoint/data/" + key, s.data)
    z.writestr("checkpoint/version", "3\n")

//! Unit tests with hand-assembled pickles and archives.

use std::io::Write;

use super::vm::{self, Value, VmError};
use super::*;
use crate::checkpoint::DType;

/// A tiny pickle assembler.
struct P(Vec<u8>);

impl P {
    fn new(proto: u8) -> P {
        P(vec![0x80, proto])
    }
    fn proto0() -> P {
        P(Vec::new())
    }
    fn op(&mut self, b: u8) -> &mut P {
        self.0.push(b);
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut P {
        self.0.extend_from_slice(b);
        self
    }
    fn s(&mut self, text: &str) -> &mut P {
        self.op(b'X')
            .raw(&(text.len() as u32).to_le_bytes())
            .raw(text.as_bytes())
    }
    fn int(&mut self, i: i32) -> &mut P {
        self.op(b'J').raw(&i.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut P {
        self.op(b'c')
            .raw(module.as_bytes())
            .op(b'\n')
            .raw(name.as_bytes())
            .op(b'\n')
    }
    fn tuple_of_ints(&mut self, xs: &[usize]) -> &mut P {
        self.op(b'(');
        for &x in xs {
            self.int(x as i32);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(storage(key), offset, shape, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        stype: &str,
        key: &str,
        offset: usize,
        shape: &[usize],
        stride: &[usize],
    ) -> &mut P {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .s("storage")
            .global("torch", stype)
            .s(key)
            .s("cpu")
            .int(64)
            .op(b't')
            .op(b'Q')
            .int(offset as i32)
            .tuple_of_ints(shape)
            .tuple_of_ints(stride)
            .op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b'.');
        self.0.clone()
    }
}

fn run(bytes: &[u8]) -> Result<Value, VmError> {
    vm::load(bytes, &mut torch::persistent_load).map(|(v, _)| v)
}

fn dict_items(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Dict(d) => d
            .borrow()
            .iter()
            .map(|(k, v)| match k {
                Value::Str(s) => (s.clone(), v.clone()),
                other => (format!("{other:?}"), v.clone()),
            })
            .collect(),
        other => panic!("expected a dict, got {other:?}"),
    }
}

fn get(v: &Value, key: &str) -> Value {
    dict_items(v)
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key `{key}`"))
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an int, got {other:?}"),
    }
}

#[test]
fn protocol2_scalars_and_containers() {
    let bytes = P::new(2)
        .op(b'}')
        .op(b'q')
        .op(0)
        .op(b'(')
        .s("k1")
        .op(b'K')
        .op(200)
        .s("i32")
        .int(-7)
        .s("u16")
        .op(b'M')
        .raw(&300u16.to_le_bytes())
        .s("long1")
        .op(0x8a)
        .op(3)
        .raw(&[0x00, 0x80, 0x00])
        .s("neg_long1")
        .op(0x8a)
        .op(1)
        .raw(&[0xff])
        .s("big")
        .op(0x8a)
        .op(10)
        .raw(&[1; 10])
        .s("f")
        .op(b'G')
        .raw(&1.5f64.to_be_bytes())
        .s("none")
        .op(b'N')
        .s("t")
        .op(0x88)
        .s("list")
        .op(b']')
        .op(b'q')
        .op(1)
        .int(1)
        .op(b'a')
        .op(b'(')
        .int(2)
        .int(3)
        .op(b'e')
        .s("same_list")
        .op(b'h')
        .op(1)
        .s("bytes")
        .op(b'C')
        .op(2)
        .raw(b"ab")
        .s("binstr")
        .op(b'U')
        .op(3)
        .raw(b"xyz")
        .s("tup")
        .op(b'K')
        .op(1)
        .op(b'K')
        .op(2)
        .op(0x86)
        .op(b'u')
        .s("late")
        .op(0x89)
        .op(b's')
        .stop();
    let v = run(&bytes).unwrap();
    assert_eq!(int(&get(&v, "k1")), 200);
    assert_eq!(int(&get(&v, "i32")), -7);
    assert_eq!(int(&get(&v, "u16")), 300);
    assert_eq!(int(&get(&v, "long1")), 32768);
    assert_eq!(int(&get(&v, "neg_long1")), -1);
    assert!(matches!(get(&v, "big"), Value::BigInt(b) if b.len() == 10));
    assert!(matches!(get(&v, "f"), Value::Float(f) if f == 1.5));
    assert!(matches!(get(&v, "none"), Value::None));
    assert!(matches!(get(&v, "t"), Value::Bool(true)));
    assert!(matches!(get(&v, "late"), Value::Bool(false)));
    let list = get(&v, "list").sequence().unwrap();
    assert_eq!(list.iter().map(int).collect::<Vec<_>>(), [1, 2, 3]);
    // The memo shares identity: items appended after BINPUT are visible through BINGET.
    assert_eq!(get(&v, "same_list").sequence().unwrap().len(), 3);
    assert!(matches!(get(&v, "bytes"), Value::Bytes(b) if b == b"ab"));
    assert!(matches!(get(&v, "binstr"), Value::Str(s) if s == "xyz"));
    assert_eq!(get(&v, "tup").sequence().unwrap().len(), 2);
}

#[test]
fn protocol4_frames_memoize_stack_global_sets() {
    let mut p = P::new(4);
    p.op(0x95).raw(&100u64.to_le_bytes());
    // OrderedDict via STACK_GLOBAL + REDUCE, memoized with MEMOIZE.
    p.op(0x8c).op(11).raw(b"collections").op(0x94);
    p.op(0x8c).op(11).raw(b"OrderedDict").op(0x94);
    p.op(0x93).op(0x94).op(b')').op(b'R').op(0x94);
    p.op(b'(');
    p.op(0x8c)
        .op(3)
        .raw(b"set")
        .op(0x8f)
        .op(b'(')
        .int(1)
        .int(2)
        .op(0x90);
    p.op(0x8c).op(6).raw(b"frozen").op(b'(').int(9).op(0x91);
    p.op(0x8c)
        .op(2)
        .raw(b"u8")
        .op(0x8d)
        .raw(&2u64.to_le_bytes())
        .raw(b"hi");
    p.op(0x8c)
        .op(2)
        .raw(b"b8")
        .op(0x8e)
        .raw(&1u64.to_le_bytes())
        .raw(b"z");
    p.op(0x8c)
        .op(1)
        .raw(b"B")
        .op(b'B')
        .raw(&3u32.to_le_bytes())
        .raw(b"abc");
    p.op(0x8c).op(2).raw(b"t3").int(1).int(2).int(3).op(0x87);
    p.op(0x8c).op(2).raw(b"t1").int(4).op(0x85);
    p.op(0x8c)
        .op(3)
        .raw(b"dup")
        .int(5)
        .op(b'r')
        .raw(&70000u32.to_le_bytes())
        .op(b'2')
        .op(b'0');
    p.op(0x8c)
        .op(3)
        .raw(b"get")
        .op(b'j')
        .raw(&70000u32.to_le_bytes());
    // POP_MARK discards a marked group.
    p.op(b'(').int(1).int(2).op(b'1');
    // NEWOBJ of OrderedDict, then BUILD with a state that is never applied.
    p.op(0x8c)
        .op(3)
        .raw(b"obj")
        .op(b'h')
        .op(2)
        .op(b')')
        .op(0x81)
        .op(b'}')
        .op(b'b');
    p.op(b'u');
    let bytes = p.stop();
    let v = run(&bytes).unwrap();
    assert!(matches!(get(&v, "set"), Value::Set(s) if s.borrow().len() == 2));
    assert!(matches!(get(&v, "frozen"), Value::Set(s) if s.borrow().len() == 1));
    assert!(matches!(get(&v, "u8"), Value::Str(s) if s == "hi"));
    assert!(matches!(get(&v, "b8"), Value::Bytes(b) if b == b"z"));
    assert!(matches!(get(&v, "B"), Value::Bytes(b) if b == b"abc"));
    assert_eq!(get(&v, "t3").sequence().unwrap().len(), 3);
    assert_eq!(get(&v, "t1").sequence().unwrap().len(), 1);
    assert_eq!(int(&get(&v, "dup")), 5);
    assert_eq!(int(&get(&v, "get")), 5);
    assert!(matches!(get(&v, "obj"), Value::Dict(_)));
    assert_eq!(dict_items(&v).len(), 10);
}

#[test]
fn protocol0_text_opcodes() {
    let mut p = P::proto0();
    p.op(b'(').op(b'd').raw(b"p0\n");
    p.raw(b"Va\n").raw(b"I42\n").op(b's');
    p.raw(b"Vb\n").raw(b"L12345678901L\n").op(b's');
    p.raw(b"Vc\n").raw(b"I01\n").op(b's');
    p.raw(b"Vd\n").raw(b"F0.25\n").op(b's');
    p.raw(b"Ve\n").raw(b"V\\u00e9x\\u005c\n").op(b's');
    p.raw(b"Vf\n").op(b'(').raw(b"I1\nI2\n").op(b'l').op(b's');
    p.raw(b"Vg\n").op(b'(').raw(b"I1\n").op(b't').op(b's');
    p.raw(b"Vh\n").raw(b"g0\n").op(b's');
    p.raw(b"Vi\n")
        .op(b'T')
        .raw(&2i32.to_le_bytes())
        .raw(b"ok")
        .op(b's');
    p.raw(b"Vj\n")
        .raw(b"ccollections\nOrderedDict\n")
        .op(b'(')
        .op(b'l')
        .op(0x85)
        .op(b'R')
        .op(b's');
    let bytes = p.stop();
    let v = run(&bytes).unwrap();
    assert_eq!(int(&get(&v, "a")), 42);
    assert_eq!(int(&get(&v, "b")), 12345678901);
    assert!(matches!(get(&v, "c"), Value::Bool(true)));
    assert!(matches!(get(&v, "d"), Value::Float(f) if f == 0.25));
    assert!(matches!(get(&v, "e"), Value::Str(s) if s == "éx\\"));
    assert_eq!(get(&v, "f").sequence().unwrap().len(), 2);
    assert_eq!(get(&v, "g").sequence().unwrap().len(), 1);
    assert!(matches!(get(&v, "h"), Value::Dict(_)));
    assert!(matches!(get(&v, "i"), Value::Str(s) if s == "ok"));
    assert!(matches!(get(&v, "j"), Value::Dict(_)));
}

#[test]
fn codecs_encode_makes_bytes() {
    let bytes = P::new(2)
        .global("_codecs", "encode")
        .s("\u{ff}\u{1}")
        .s("latin1")
        .op(0x86)
        .op(b'R')
        .stop();
    assert!(matches!(run(&bytes).unwrap(), Value::Bytes(b) if b == [0xff, 1]));
}

#[test]
fn tensor_rebuild_records_layout() {
    let bytes = P::new(2)
        .tensor("HalfStorage", "7", 3, &[2, 4], &[1, 2])
        .stop();
    match run(&bytes).unwrap() {
        Value::Tensor(t) => {
            assert_eq!(t.storage.key, "7");
            assert_eq!(t.storage.dtype, DType::F16);
            assert_eq!(t.offset, 3);
            assert_eq!(t.shape, [2, 4]);
            assert_eq!(t.stride, [1, 2]);
        }
        other => panic!("expected a tensor, got {other:?}"),
    }
}

fn evil_reduce(mut p: P, marker: &Path) -> Vec<u8> {
    p.s(&format!("touch {}", marker.display()))
        .op(0x85)
        .op(b'R')
        .stop()
}

#[test]
fn forbidden_globals_are_refused_before_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut via_global = P::new(2);
    via_global.global("os", "system");
    let mut via_stack = P::new(4);
    via_stack.s("os").s("system").op(0x93);
    let mut eval = P::new(2);
    eval.global("builtins", "eval");
    let mut posix = P::new(2);
    posix.global("posix", "system");
    let mut inst = P::new(0);
    inst.op(b'(').raw(b"isubprocess\nPopen\n");
    let cases = [
        (via_global, "os.system"),
        (via_stack, "os.system"),
        (eval, "builtins.eval"),
        (posix, "posix.system"),
        (inst, "subprocess.Popen"),
    ];
    for (p, name) in cases {
        let bytes = evil_reduce(p, &marker);
        assert_eq!(run(&bytes).unwrap_err(), VmError::Forbidden(name.into()));
        assert!(!marker.exists(), "`{name}` ran");
    }
    // Through the file reader, as a legacy-looking stream.
    let path = dir.path().join("evil.pt");
    let mut p = P::new(2);
    p.global("os", "system");
    fs_err::write(&path, evil_reduce(p, &marker)).unwrap();
    match PickleFile::open(&path) {
        Err(Error::ForbiddenGlobal { global, .. }) => assert_eq!(global, "os.system"),
        other => panic!("expected ForbiddenGlobal, got {other:?}"),
    }
    assert!(!marker.exists());
}

#[test]
fn load_from_bytes_and_unknown_torch_names_are_refused() {
    for (m, n) in [
        ("torch.storage", "_load_from_bytes"),
        ("torch", "load"),
        ("torch", "ComplexFloatStorage"),
        ("torch._utils", "_rebuild_qtensor"),
    ] {
        let bytes = P::new(2).global(m, n).stop();
        assert_eq!(
            run(&bytes).unwrap_err(),
            VmError::Forbidden(format!("{m}.{n}"))
        );
    }
}

fn malformed(bytes: &[u8]) -> String {
    match run(bytes) {
        Err(VmError::Malformed(m)) => m,
        other => panic!("expected a malformed error, got {other:?}"),
    }
}

#[test]
fn truncated_and_hostile_lengths_are_refused() {
    let full = P::new(2).op(b'}').s("key").int(1).op(b's').stop();
    for cut in 0..full.len() {
        malformed(&full[..cut]);
    }
    assert!(malformed(&full[..full.len() - 3]).contains("truncated"));
    let huge = P::new(2).op(b'X').raw(&u32::MAX.to_le_bytes()).stop();
    assert!(
        malformed(&huge).contains("truncated"),
        "{}",
        malformed(&huge)
    );
    let huge8 = P::new(4).op(0x8e).raw(&u64::MAX.to_le_bytes()).stop();
    malformed(&huge8);
    let neg = P::new(2).op(b'T').raw(&(-1i32).to_le_bytes()).stop();
    assert!(malformed(&neg).contains("negative"));
    let long4 = P::new(2).op(0x8b).raw(&i32::MAX.to_le_bytes()).stop();
    malformed(&long4);
}

#[test]
fn stack_memo_and_opcode_errors() {
    assert!(malformed(&P::new(2).op(b'0').stop()).contains("underflow"));
    assert!(malformed(&P::new(2).op(b'h').op(9).stop()).contains("memo key 9"));
    assert!(malformed(&P::new(2).op(0xff).stop()).contains("0xff"));
    assert!(malformed(&P::new(9).stop()).contains("protocol 9"));
    assert!(malformed(&P::new(2).op(b'e').stop()).contains("MARK"));
    // Items above a MARK cannot be popped past it.
    assert!(malformed(&P::new(2).int(1).op(b'(').op(0x85).stop()).contains("underflow"));
    // Calling something that is not a global.
    assert!(malformed(&P::new(2).int(1).op(b')').op(b'R').stop()).contains("cannot call"));
}

#[test]
fn layout_helpers() {
    assert!(is_contiguous(&[2, 3], &[3, 1]));
    assert!(is_contiguous(&[1, 3], &[99, 1]));
    assert!(!is_contiguous(&[3, 2], &[1, 3]));
    let src: Vec<u8> = (0u8..6).collect();
    assert_eq!(
        gather(&src, 1, 0, &[3, 2], &[1, 3]).unwrap(),
        [0, 3, 1, 4, 2, 5]
    );
    assert_eq!(gather(&src, 2, 1, &[2], &[1]).unwrap(), [2, 3, 4, 5]);
    assert!(gather(&src, 1, 5, &[2], &[1]).is_none());
}

/// Write a torch-style zip with the given data pickle and entries.
fn write_zip(path: &Path, pickle: &[u8], entries: &[(&str, &[u8])], deflate: bool) {
    let file = fs_err::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    for (name, bytes) in entries {
        zip.start_file(format!("archive/{name}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn one_tensor_dict(stype: &str, shape: &[usize], stride: &[usize]) -> Vec<u8> {
    P::new(2)
        .op(b'}')
        .s("w")
        .tensor(stype, "0", 0, shape, stride)
        .op(b's')
        .stop()
}

#[test]
fn missing_storage_entry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    write_zip(
        &path,
        &one_tensor_dict("FloatStorage", &[2], &[1]),
        &[],
        false,
    );
    match PickleFile::open(&path) {
        Err(Error::Pickle { reason, .. }) => {
            assert!(reason.contains("`archive/data/0`"), "{reason}")
        }
        other => panic!("expected a pickle error, got {other:?}"),
    }
}

#[test]
fn storage_too_small_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    let data = [0u8; 8];
    write_zip(
        &path,
        &one_tensor_dict("FloatStorage", &[3], &[1]),
        &[("data/0", &data)],
        false,
    );
    match PickleFile::open(&path) {
        Err(Error::Pickle { reason, .. }) => assert!(reason.contains("past the end"), "{reason}"),
        other => panic!("expected a pickle error, got {other:?}"),
    }
}

#[test]
fn broadcast_views_are_gathered_within_a_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.bin");
    let data = 7.0f32.to_le_bytes();
    write_zip(
        &path,
        &one_tensor_dict("FloatStorage", &[2, 3], &[0, 0]),
        &[("data/0", &data)],
        false,
    );
    let f = PickleFile::open(&path).unwrap();
    assert_eq!(f.read_f32("w").unwrap(), [7.0; 6]);
    let huge = one_tensor_dict("FloatStorage", &[1 << 20, 1 << 10], &[0, 0]);
    write_zip(&path, &huge, &[("data/0", &data)], false);
    match PickleFile::open(&path) {
        Err(Error::Pickle { reason, .. }) => assert!(reason.contains("repeats"), "{reason}"),
        other => panic!("expected a pickle error, got {other:?}"),
    }
}

#[test]
fn deflated_and_big_endian_storages_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("be.bin");
    let values = [1.0f32, -2.5, 3.25, 4.0];
    let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_zip(
        &path,
        &one_tensor_dict("FloatStorage", &[2, 2], &[1, 2]),
        &[("data/0", &be), ("byteorder", b"big")],
        true,
    );
    let f = PickleFile::open(&path).unwrap();
    assert_eq!(f.tensors()[0].shape, [2, 2]);
    assert_eq!(f.read_f32("w").unwrap(), [1.0, 3.25, -2.5, 4.0]);
}

#[test]
fn plain_list_at_top_level_is_not_a_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.bin");
    write_zip(&path, &P::new(2).op(b']').stop(), &[], false);
    match PickleFile::open(&path) {
        Err(Error::Pickle { reason, .. }) => assert!(reason.contains("list"), "{reason}"),
        other => panic!("expected a pickle error, got {other:?}"),
    }
}

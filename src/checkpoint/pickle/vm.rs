//! A restricted unpickler: it builds values from pickle opcodes and never executes anything.
//!
//! Globals are resolved against the allow-list in [`super::torch`] the moment `GLOBAL`,
//! `STACK_GLOBAL` or `INST` is read, so a refused callable is reported before any `REDUCE`
//! could reach it. "Calling" an allowed global only interprets its arguments (tensor rebuild,
//! `OrderedDict`, `_codecs.encode`, ...). Every length prefix is checked against the bytes
//! that remain, and the stack and memo are capped, so hostile input cannot blow up memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::torch::{self, Global, StorageRef, TensorMeta};

/// Most values the unpickler keeps on its stack at once.
const MAX_STACK: usize = 4_000_000;
/// Most memo entries.
const MAX_MEMO: usize = 16_000_000;
/// Deepest nesting of `MARK`s.
const MAX_MARKS: usize = 100_000;
/// Highest pickle protocol understood.
const MAX_PROTOCOL: u8 = 5;

/// A value built by the unpickler.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    #[allow(dead_code)] // read by tests; no tensor logic needs it
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A larger integer, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    #[allow(dead_code)] // read by tests; no tensor logic needs it
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple (immutable).
    Tuple(Rc<Vec<Value>>),
    /// A list, shared by identity with the memo.
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict (or `OrderedDict`) in insertion order; later duplicate keys win.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A set or frozenset.
    Set(Rc<RefCell<Vec<Value>>>),
    /// An allowed global, not yet applied.
    Global(Global),
    /// A storage named by a persistent id.
    Storage(Rc<StorageRef>),
    /// A tensor view of a storage.
    Tensor(Rc<TensorMeta>),
    /// An allowed object lgreg does not look into (e.g. a `slice`).
    Opaque(&'static str),
}

impl Value {
    /// A short name of the value's kind, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Opaque(name) => name,
        }
    }

    /// A new dict value.
    pub(crate) fn new_dict(items: Vec<(Value, Value)>) -> Value {
        Value::Dict(Rc::new(RefCell::new(items)))
    }

    /// A new set value.
    pub(crate) fn new_set(items: Vec<Value>) -> Value {
        Value::Set(Rc::new(RefCell::new(items)))
    }

    /// The items of a tuple or list, copied out.
    pub(crate) fn sequence(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.as_ref().clone()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
}

/// Why unpickling stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VmError {
    /// A global outside the allow-list, as `module.name`.
    Forbidden(String),
    /// Malformed or unsupported input.
    Malformed(String),
}

/// Results of the unpickler.
pub(crate) type VmResult<T> = Result<T, VmError>;

/// A [`VmError::Malformed`] with this message.
pub(crate) fn bad(msg: impl Into<String>) -> VmError {
    VmError::Malformed(msg.into())
}

/// Turns a persistent id into a value (a storage).
pub(crate) type PersistentLoad<'p> = dyn FnMut(Value) -> VmResult<Value> + 'p;

/// Unpickle one object from the front of `data`; returns it and the number of bytes read.
pub(crate) fn load(data: &[u8], persistent: &mut PersistentLoad<'_>) -> VmResult<(Value, usize)> {
    let mut vm = Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    vm.run(persistent)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Vm<'a> {
    fn run(&mut self, persistent: &mut PersistentLoad<'_>) -> VmResult<(Value, usize)> {
        loop {
            let at = self.pos;
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > MAX_PROTOCOL {
                        return Err(bad(format!(
                            "pickle protocol {proto} is not supported (the highest known is {MAX_PROTOCOL})"
                        )));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok((v, self.pos));
                }
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    let g = global(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                0x93 => {
                    let name = self.pop_str("STACK_GLOBAL name")?;
                    let module = self.pop_str("STACK_GLOBAL module")?;
                    let g = global(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                b'i' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    let g = global(&module, &name)?;
                    let args = self.pop_mark()?;
                    let v = torch::call(g, args)?;
                    self.push(v)?;
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(bad(format!("OBJ at offset {at} has no class")));
                    }
                    let cls = items.remove(0);
                    let v = apply(cls, items)?;
                    self.push(v)?;
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = match args {
                        Value::Tuple(t) => t.as_ref().clone(),
                        other => {
                            return Err(bad(format!(
                                "arguments at offset {at} are a {}, expected a tuple",
                                other.kind()
                            )));
                        }
                    };
                    let v = apply(callable, args)?;
                    self.push(v)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = args.sequence().ok_or_else(|| {
                        bad(format!("NEWOBJ_EX at offset {at} has no argument tuple"))
                    })?;
                    let v = apply(cls, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    // State is never applied (that would run `__setstate__`); the object stays.
                    let _state = self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent(pid)?;
                    self.push(v)?;
                }
                b'P' => {
                    let pid = self.line_str()?;
                    let v = persistent(Value::Str(pid))?;
                    self.push(v)?;
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(bad(format!("more than {MAX_MARKS} nested marks")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'}' => self.push(Value::new_dict(Vec::new()))?,
                b']' => self.push(Value::List(Rc::new(RefCell::new(Vec::new()))))?,
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                0x8f => self.push(Value::new_set(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items, at)?;
                    self.push(Value::new_dict(pairs))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))))?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::new_set(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        other => return Err(not_a("APPEND", "list", other, at)),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        other => return Err(not_a("APPENDS", "list", other, at)),
                    }
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::Set(s) => s.borrow_mut().extend(items),
                        other => return Err(not_a("ADDITEMS", "set", other, at)),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        other => return Err(not_a("SETITEM", "dict", other, at)),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items, at)?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().extend(items),
                        other => return Err(not_a("SETITEMS", "dict", other, at)),
                    }
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let b = self.array::<4>()?;
                    self.push(Value::Int(i64::from(i32::from_le_bytes(b))))?;
                }
                b'K' => {
                    let b = self.byte()?;
                    self.push(Value::Int(i64::from(b)))?;
                }
                b'M' => {
                    let b = self.array::<2>()?;
                    self.push(Value::Int(i64::from(u16::from_le_bytes(b))))?;
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    let bytes = self.take(n)?;
                    self.push(long(bytes))?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array::<4>()?);
                    let n = usize::try_from(n).map_err(|_| {
                        bad(format!("LONG4 at offset {at} has negative length {n}"))
                    })?;
                    let bytes = self.take(n)?;
                    self.push(long(bytes))?;
                }
                b'I' => {
                    let line = self.line_str()?;
                    let v = match line.as_str() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => Value::Int(parse_int(s, at)?),
                    };
                    self.push(v)?;
                }
                b'L' => {
                    let line = self.line_str()?;
                    let s = line.strip_suffix('L').unwrap_or(&line);
                    self.push(Value::Int(parse_int(s, at)?))?;
                }
                b'G' => {
                    let b = self.array::<8>()?;
                    self.push(Value::Float(f64::from_be_bytes(b)))?;
                }
                b'F' => {
                    let line = self.line_str()?;
                    let f = line.trim().parse::<f64>().map_err(|_| {
                        bad(format!("FLOAT `{line}` at offset {at} is not a number"))
                    })?;
                    self.push(Value::Float(f))?;
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.len_u32()?,
                        0x8c => usize::from(self.byte()?),
                        _ => self.len_u64()?,
                    };
                    let bytes = self.take(n)?;
                    let s = std::str::from_utf8(bytes)
                        .map_err(|_| bad(format!("string at offset {at} is not valid UTF-8")))?;
                    self.push(Value::Str(s.to_string()))?;
                }
                b'V' => {
                    let line = self.line()?;
                    let s = raw_unicode_escape(line)
                        .ok_or_else(|| bad(format!("UNICODE at offset {at} has a bad escape")))?;
                    self.push(Value::Str(s))?;
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        let n = i32::from_le_bytes(self.array::<4>()?);
                        usize::try_from(n).map_err(|_| {
                            bad(format!("BINSTRING at offset {at} has negative length {n}"))
                        })?
                    } else {
                        usize::from(self.byte()?)
                    };
                    let bytes = self.take(n)?;
                    let v = match std::str::from_utf8(bytes) {
                        Ok(s) => Value::Str(s.to_string()),
                        Err(_) => Value::Bytes(bytes.to_vec()),
                    };
                    self.push(v)?;
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.len_u32()?,
                        b'C' => usize::from(self.byte()?),
                        _ => self.len_u64()?,
                    };
                    let bytes = self.take(n)?;
                    self.push(Value::Bytes(bytes.to_vec()))?;
                }
                b'p' => {
                    let line = self.line_str()?;
                    let idx = parse_memo_index(&line, at)?;
                    self.memo_put(idx)?;
                }
                b'q' => {
                    let idx = u32::from(self.byte()?);
                    self.memo_put(idx)?;
                }
                b'r' => {
                    let idx = u32::from_le_bytes(self.array::<4>()?);
                    self.memo_put(idx)?;
                }
                0x94 => {
                    let idx =
                        u32::try_from(self.memo.len()).map_err(|_| bad("memo index overflow"))?;
                    self.memo_put(idx)?;
                }
                b'g' => {
                    let line = self.line_str()?;
                    let idx = parse_memo_index(&line, at)?;
                    self.memo_get(idx, at)?;
                }
                b'h' => {
                    let idx = u32::from(self.byte()?);
                    self.memo_get(idx, at)?;
                }
                b'j' => {
                    let idx = u32::from_le_bytes(self.array::<4>()?);
                    self.memo_get(idx, at)?;
                }
                other => {
                    return Err(bad(format!(
                        "opcode 0x{other:02x} at offset {at} is unknown or not supported"
                    )));
                }
            }
        }
    }

    fn byte(&mut self) -> VmResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(bad(format!(
                "pickle is truncated: {n} bytes needed at offset {}, {left} left",
                self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len_u32(&mut self) -> VmResult<usize> {
        let n = u32::from_le_bytes(self.array::<4>()?);
        usize::try_from(n).map_err(|_| bad(format!("length {n} does not fit in memory")))
    }

    fn len_u64(&mut self) -> VmResult<usize> {
        let n = u64::from_le_bytes(self.array::<8>()?);
        usize::try_from(n).map_err(|_| bad(format!("length {n} does not fit in memory")))
    }

    fn line(&mut self) -> VmResult<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            bad(format!(
                "pickle is truncated: no end of line after offset {}",
                self.pos
            ))
        })?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line_str(&mut self) -> VmResult<String> {
        let at = self.pos;
        let line = self.line()?;
        std::str::from_utf8(line)
            .map(str::to_string)
            .map_err(|_| bad(format!("text at offset {at} is not valid UTF-8")))
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) -> VmResult<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(bad(format!("pickle stack exceeds {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> VmResult<Value> {
        if self.stack.len() <= self.floor() {
            return Err(bad(format!(
                "pickle stack underflow before offset {}",
                self.pos
            )));
        }
        self.stack
            .pop()
            .ok_or_else(|| bad(format!("pickle stack underflow before offset {}", self.pos)))
    }

    fn top(&self) -> VmResult<&Value> {
        if self.stack.len() <= self.floor() {
            return Err(bad(format!(
                "pickle stack is empty before offset {}",
                self.pos
            )));
        }
        self.stack
            .last()
            .ok_or_else(|| bad(format!("pickle stack is empty before offset {}", self.pos)))
    }

    fn pop_mark(&mut self) -> VmResult<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| bad(format!("no MARK before offset {}", self.pos)))?;
        if mark > self.stack.len() {
            return Err(bad(format!("MARK lost before offset {}", self.pos)));
        }
        Ok(self.stack.split_off(mark))
    }

    fn pop_str(&mut self, what: &str) -> VmResult<String> {
        match self.pop()? {
            Value::Str(s) => Ok(s),
            other => Err(bad(format!("{what} is a {}, expected a str", other.kind()))),
        }
    }

    fn memo_put(&mut self, idx: u32) -> VmResult<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return Err(bad(format!("pickle memo exceeds {MAX_MEMO} entries")));
        }
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32, at: usize) -> VmResult<()> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| {
            bad(format!(
                "memo key {idx} read at offset {at} was never stored"
            ))
        })?;
        self.push(v)
    }
}

fn global(module: &str, name: &str) -> VmResult<Global> {
    torch::resolve_global(module, name)
        .ok_or_else(|| VmError::Forbidden(format!("{module}.{name}")))
}

fn apply(callable: Value, args: Vec<Value>) -> VmResult<Value> {
    match callable {
        Value::Global(g) => torch::call(g, args),
        other => Err(bad(format!("cannot call a {}", other.kind()))),
    }
}

fn not_a(op: &str, want: &str, got: &Value, at: usize) -> VmError {
    bad(format!(
        "{op} at offset {at} targets a {}, expected a {want}",
        got.kind()
    ))
}

fn pairs(items: Vec<Value>, at: usize) -> VmResult<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(bad(format!(
            "dict items at offset {at} are {} values, expected an even count",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A little-endian two's-complement integer of any width.
fn long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt(bytes.to_vec());
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

fn parse_int(s: &str, at: usize) -> VmResult<i64> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| bad(format!("integer `{s}` at offset {at} is not an i64")))
}

fn parse_memo_index(s: &str, at: usize) -> VmResult<u32> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| bad(format!("memo index `{s}` at offset {at} is not a u32")))
}

/// Decode Python's `raw-unicode-escape`: latin-1 bytes plus `\uXXXX` and `\UXXXXXXXX`.
fn raw_unicode_escape(bytes: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && i + 1 < bytes.len() && (bytes[i + 1] == b'u' || bytes[i + 1] == b'U') {
            let n = if bytes[i + 1] == b'u' { 4 } else { 8 };
            let hex = bytes.get(i + 2..i + 2 + n)?;
            let hex = std::str::from_utf8(hex).ok()?;
            let code = u32::from_str_radix(hex, 16).ok()?;
            out.push(char::from_u32(code)?);
            i += 2 + n;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

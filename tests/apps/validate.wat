;; A raw-wasm handler module speaking the JSON ABI (docs/apps.md): no WASI, only host.get.
;; validate(in_len): rejects (-1) when the input is longer than 400 bytes, else answers `true`.
;; spin(in_len): loops forever (stopped by fuel). grow(in_len): grows memory until refused, then traps.
;; peek(in_len): host.get("private/diary") and answers what it got, or `"denied"`.
(module
  (import "host" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "true")
  (data (i32.const 1040) "private/diary")
  (data (i32.const 1060) "\"denied\"")
  (func (export "in_buf") (result i32) (i32.const 4096))
  (func (export "out_buf") (result i32) (i32.const 65536))
  (func (export "validate") (param $n i32) (result i32)
    (if (i32.gt_u (local.get $n) (i32.const 400)) (then (return (i32.const -1))))
    (memory.copy (i32.const 65536) (i32.const 1024) (i32.const 4))
    (i32.const 4))
  (func (export "spin") (param $n i32) (result i32)
    (loop $l (br $l))
    (i32.const 0))
  (func (export "grow") (param $n i32) (result i32)
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "peek") (param $n i32) (result i32)
    (local $r i32)
    (local.set $r (call $get (i32.const 1040) (i32.const 13) (i32.const 65536) (i32.const 1024)))
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then
        (memory.copy (i32.const 65536) (i32.const 1060) (i32.const 8))
        (return (i32.const 8))))
    (local.get $r))
)

/*
 * hooks_queue.h - the on-disk queue of one webhook: what is accepted for
 * delivery and not yet delivered, so a receiver that is down, a kill -9 or
 * a restart loses nothing.
 *
 * One append-only file, DIR/queue, of records (integers little-endian):
 *
 *   data  "HXQ1" seq:u64 len:u32 id:36 bytes crc:u32 body:len bytes
 *   ack   "HXA1" seq:u64 crc:u32
 *
 * A data record is one delivery: its body (the JSON POSTed) and its
 * delivery id (a UUID, the X-Horcrux-Delivery header: the same on every
 * attempt, before and after a restart). seq increases by one per data
 * record. An ack record says that every data record up to seq is done
 * (delivered, or dropped and counted). crc is the CRC-32 of the record's
 * bytes after the magic and before the crc, then of the body.
 *
 * Durability: append() writes, sync() fsyncs; a delivery counts as
 * accepted once sync() returned. ack() writes and fsyncs its record before
 * the head is dropped from memory, so a crash between a delivery and its
 * ack delivers it again (at-least-once, with the same id).
 *
 * Opening reads the file through hxq_parse, which stops at the first
 * record that is torn (a crash mid-write), has a bad crc, a bad magic or a
 * seq out of order: the file is cut there, and what was cut is said.
 *
 * Compaction: when the done records (delivered, or dropped for room:
 * after an ack and after an append that dropped) take more room than the
 * pending ones (and at least HXQ_COMPACT_MIN bytes), the pending records
 * are written to DIR/queue.new, fsynced and renamed over DIR/queue (then
 * the directory is fsynced): a crash leaves either file whole.
 *
 * Bound: max_bytes caps the pending records' bytes. Appending past it drops
 * the oldest pending records (an ack record), and append reports how many:
 * the newest events are the ones a monitor wants, and the engine cannot be
 * told to wait. The file itself stays under about 2 * max_bytes +
 * HXQ_COMPACT_MIN.
 *
 * An flock on DIR/lock keeps a second process off the same queue.
 */
#ifndef HORCRUX_HOOKS_QUEUE_H
#define HORCRUX_HOOKS_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#define HXQ_ID_LEN 36
#define HXQ_DATA_HEAD (4 + 8 + 4 + HXQ_ID_LEN + 4)
#define HXQ_ACK_LEN (4 + 8 + 4)
#define HXQ_BODY_MAX (4u << 20) /* one delivery's body */
#define HXQ_COMPACT_MIN (1u << 20)

enum { HXQ_DATA = 1, HXQ_ACK = 2 };

/* What hxq_parse found: kind, seq; for data, the id, the body and the
 * offset of the record in the buffer. Returns 0 to go on. */
typedef int (*hxq_visit)(void *ud, int kind, uint64_t seq, const char *id,
                         const char *body, size_t len, size_t off);

/* Walks buf[0..len) record by record, calling visit for each whole, valid
 * one; data seqs must increase by one (the first may be any), an ack may
 * not name a seq past the last data record. Returns the length of the valid
 * prefix (len when the whole buffer is valid). */
size_t hxq_parse(const char *buf, size_t len, hxq_visit visit, void *ud);

uint32_t hxq_crc32(uint32_t crc, const void *p, size_t n);

typedef struct hxq hxq;

/* Opens (creating DIR with mode 0700, and its parents) the queue in DIR.
 * Returns NULL with a message in err. *cut gets the bytes cut from a torn
 * or damaged tail. */
hxq *hxq_open(const char *dir, uint64_t max_bytes, size_t *cut, char *err,
              size_t errlen);
void hxq_close(hxq *q);

/* Appends a data record with a fresh delivery id (copied to id_out when
 * not NULL, NUL-terminated). *dropped gets the count of the oldest records
 * dropped to make room. Returns 0, or -1 with errno. */
int hxq_append(hxq *q, const char *body, size_t len,
               char id_out[HXQ_ID_LEN + 1], unsigned *dropped);
int hxq_sync(hxq *q);

/* The oldest pending record: 1 with its body's length, id and seq; 0 when
 * none. hxq_read_head then reads its body into body[0..len). */
int hxq_head(const hxq *q, size_t *len, char id[HXQ_ID_LEN + 1], uint64_t *seq);
int hxq_read_head(hxq *q, char *body);

/* Marks every pending record up to seq done (written and fsynced); a seq
 * done already (dropped while its delivery was in flight) is nothing to
 * do. Returns 0, or -1 with errno (EINVAL: a seq never appended). */
int hxq_ack(hxq *q, uint64_t seq);

size_t hxq_pending(const hxq *q);
uint64_t hxq_pending_bytes(const hxq *q);
uint64_t hxq_file_bytes(const hxq *q);

/* The events mark: DIR/events.mark, "HXM1 <ns>\n", the time (wall clock,
 * ns) of the newest container event the hooks thread accepted, so that the
 * next start asks the engine for what came after (events while horcrux was
 * down). Saved to events.mark.new, fsynced and renamed over it (then the
 * directory is fsynced): a crash leaves either mark whole.
 *
 * hxq_mark_parse: 0 and *ns for a mark's text, -1 for anything else.
 * hxq_mark_load: 1 and *ns; 0 when there is no mark; -1 with errno (EINVAL:
 * a damaged mark). hxq_mark_save: 0, or -1 with errno. */
#define HXQ_MARK "events.mark"
int hxq_mark_parse(const char *s, size_t n, int64_t *ns);
int hxq_mark_load(const char *dir, int64_t *ns);
int hxq_mark_save(const char *dir, int64_t ns);

/* Replaces DIR/name with text as the mark is replaced (name.new, fsynced,
 * renamed over it, the directory fsynced): 0, or -1 with errno. The hooks
 * thread keeps its firing alerts so (alerts.json), across a restart. */
int hxq_file_save(const char *dir, const char *name, const char *text,
                  size_t len);

#endif

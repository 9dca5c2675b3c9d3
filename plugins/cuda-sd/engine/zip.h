/* zip.h - minimal read-only ZIP reader over a byte buffer (a memory map),
 * enough for PyTorch checkpoints: stored and deflated entries, zip64.
 *
 * The archive is not copied: sd_zip keeps a pointer to the caller's buffer,
 * which must outlive it. Every offset and size read from the archive is
 * checked against the buffer before use. Errors name the file (`fname`,
 * used only for messages) and the problem.
 */
#ifndef SD_ENGINE_ZIP_H
#define SD_ENGINE_ZIP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_zip_entry {
    char *name;                 /* owned by the sd_zip */
    uint16_t method;            /* 0 stored, 8 deflated */
    uint32_t crc32;
    uint64_t comp_size;
    uint64_t size;              /* uncompressed */
    uint64_t data_offset;       /* of the (compressed) data in the buffer */
} sd_zip_entry;

typedef struct sd_zip {
    const unsigned char *base;  /* borrowed */
    size_t len;
    const char *fname;          /* borrowed, for messages */
    sd_zip_entry *entries;      /* owned */
    size_t n_entries;
} sd_zip;

/* Whether the buffer starts like a zip archive ("PK\3\4"). */
int sd_zip_looks_like(const void *base, size_t len);

/* Reads the central directory. 0, or -1 with err. On failure *z holds
 * nothing that needs closing. */
int sd_zip_open(sd_zip *z, const void *base, size_t len, const char *fname,
                char *err, size_t errlen);
void sd_zip_close(sd_zip *z);

/* Exact-name lookup; NULL when absent. */
const sd_zip_entry *sd_zip_find(const sd_zip *z, const char *name);

/* The entry's uncompressed bytes. Stored entries are returned in place
 * (*data points into the buffer, *owned = NULL); deflated ones are inflated
 * into a malloc'd buffer returned in both *data and *owned (caller frees
 * *owned). verify_crc: check the CRC-32 also for stored entries (deflated
 * ones are always checked). 0, or -1 with err. */
int sd_zip_read(const sd_zip *z, const sd_zip_entry *e, int verify_crc,
                const unsigned char **data, unsigned char **owned,
                char *err, size_t errlen);

#endif

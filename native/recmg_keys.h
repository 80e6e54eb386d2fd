/* The vector key: (table, row) packed into one uint64 as table << 40 | row, the one
 * definition the C cores use; Python's is recmg.trace.format (TABLE_SHIFT, ROW_MASK,
 * make_keys), and tests/unit/test_native.py checks the two agree. */
#ifndef RECMG_KEYS_H
#define RECMG_KEYS_H

#include <stdint.h>

#define RECMG_TABLE_SHIFT 40
#define RECMG_ROW_MASK ((UINT64_C(1) << RECMG_TABLE_SHIFT) - 1)
#define RECMG_KEY(table, row) (((uint64_t)(table) << RECMG_TABLE_SHIFT) | (uint64_t)(row))
#define RECMG_KEY_TABLE(key) ((uint64_t)(key) >> RECMG_TABLE_SHIFT)
#define RECMG_KEY_ROW(key) ((uint64_t)(key) & RECMG_ROW_MASK)

#endif

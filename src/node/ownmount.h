/*
 * ownmount.h — the node's own system calls on its mount, made from
 * threads that cannot keep the mount alive after the node is killed.
 *
 * The node opens files in its own mount to take SQLite's locks while it
 * writes a replicated transaction (apply.c) and rolls back what a lock
 * holder left unfinished (writelock.c). Every such call, and every later
 * call on a descriptor it opened, must go through ownmount_call(): the
 * descriptors live in a descriptor table of their own (see ownmount.c)
 * and mean nothing, or something else, anywhere else.
 */
#ifndef LITEFS_OWNMOUNT_H
#define LITEFS_OWNMOUNT_H

#include <stdbool.h>

/* Runs fn(arg) on one of the mount's own threads and returns what fn
 * returned. Calls from different threads run at the same time (a thread
 * is added while all are busy, up to a cap). When those threads cannot
 * be set up, fn runs on the calling thread (logged once). */
int ownmount_call(int (*fn)(void *arg), void *arg);

/* True on one of those threads (for assertions and tests). */
bool ownmount_on_own_thread(void);

#endif

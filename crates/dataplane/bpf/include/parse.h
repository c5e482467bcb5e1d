/* Header parsing with the bounds checks the verifier requires. */
#ifndef FULCRUM_PARSE_H
#define FULCRUM_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "constants.h"

/* A pointer to `len` bytes at `p`, or NULL when the frame ends first. */
#define HEADER(p, end, type) (((void *)(p) + sizeof(type) > (void *)(end)) ? NULL : (type *)(p))

#endif

/* LD_PRELOAD shim: a name server that takes 30 s to answer for one name.
 *
 * getaddrinfo("slow-dns.invalid", ...) resolves to 127.0.0.1, at once the
 * first time and after 30 s from then on (from the first call on when
 * SLOW_DNS_ALWAYS is set). Literal-only lookups (AI_NUMERICHOST) fail at
 * once, as the real resolver does for a name. Every other name goes to libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*gai_fn)(const char*, const char*, const struct addrinfo*, struct addrinfo**);
static int lookups;

int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                struct addrinfo** res) {
  gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
  if (node == NULL || strcmp(node, "slow-dns.invalid") != 0) return real(node, service, hints, res);
  if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)) return EAI_NONAME;
  if (__sync_fetch_and_add(&lookups, 1) > 0 || getenv("SLOW_DNS_ALWAYS") != NULL) sleep(30);
  return real("127.0.0.1", service, hints, res);
}

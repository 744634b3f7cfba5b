/*
 * guestlink_slab: read buffers whose memory is used again once the garbage collector has freed
 * them, instead of going back to the system.
 *
 * A stream's consumer that keeps the chunks it is handed (anything that does not say when it
 * is done with them, see src/recycle.ts) leaves each 1 MiB read slab to the garbage collector.
 * glibc then gives the memory back to the system (a freed mmap, or the top of the heap trimmed)
 * and the next slab faults every page in anew: up to 256 faults per MiB read, 12.5 us each on
 * the VMs we run on, up to a third of a reader's time (src/platform/slabs.ts has the figures).
 *
 * slab(bytes) returns an ArrayBuffer over memory of our own (anonymous mmap). The finalizer that
 * Node runs once V8 has collected the ArrayBuffer, when no view of it and no reference to it is
 * left in JavaScript, puts the memory on a free list; the next slab of that size takes it from
 * there, its pages still present. The memory is announced to V8 as external memory, so that it
 * counts toward when V8 collects, as Node's own buffers do: V8 collects once about 64 MiB more
 * is announced, so one collection frees about that much, and the list holds up to MAX_FREE_BYTES
 * (more is unmapped). trim() unmaps what the list holds (src/platform/slabs.ts calls it when no
 * slab was taken for a while).
 *
 * The list is guarded by a mutex: a finalizer is not promised to run on the JavaScript thread.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <node_api.h>

/* Bytes of free slabs kept at most; beyond that, freed slabs are unmapped. */
#define MAX_FREE_BYTES ((size_t)64 << 20)
/* Free slabs kept at most, whatever their size. */
#define MAX_FREE 256

struct free_slab {
  void *memory;
  size_t bytes;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct free_slab free_list[MAX_FREE];
static size_t free_count = 0;
static size_t free_bytes = 0;
/* Counters for stats(): slabs mapped, taken from the free list, unmapped. */
static uint64_t mapped = 0, reused = 0, unmapped = 0;

static void *take(size_t bytes) {
  void *memory = NULL;
  pthread_mutex_lock(&lock);
  for (size_t i = free_count; i > 0; i--) {
    if (free_list[i - 1].bytes == bytes) {
      memory = free_list[i - 1].memory;
      free_list[i - 1] = free_list[--free_count];
      free_bytes -= bytes;
      reused++;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  if (memory != NULL) return memory;
  /* Populated in the one call: a slab is read into whole, and one call costs less than a fault
   * for each page. */
  memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                -1, 0);
  if (memory == MAP_FAILED) return NULL;
  pthread_mutex_lock(&lock);
  mapped++;
  pthread_mutex_unlock(&lock);
  return memory;
}

static void give_back(napi_env env, void *memory, void *hint) {
  size_t bytes = (size_t)(uintptr_t)hint;
  int64_t ignored;
  napi_adjust_external_memory(env, -(int64_t)bytes, &ignored);
  pthread_mutex_lock(&lock);
  if (free_count < MAX_FREE && free_bytes + bytes <= MAX_FREE_BYTES) {
    free_list[free_count].memory = memory;
    free_list[free_count].bytes = bytes;
    free_count++;
    free_bytes += bytes;
    memory = NULL;
  } else {
    unmapped++;
  }
  pthread_mutex_unlock(&lock);
  if (memory != NULL) munmap(memory, bytes);
}

static napi_value slab(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int64_t requested = 0;
  if (argc < 1 || napi_get_value_int64(env, argv[0], &requested) != napi_ok || requested <= 0 ||
      requested > (int64_t)1 << 30) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "slab: bytes must be from 1 to 2^30");
    return NULL;
  }
  size_t bytes = (size_t)requested;
  void *memory = take(bytes);
  if (memory == NULL) {
    napi_throw_error(env, "ENOMEM", "slab: mmap failed");
    return NULL;
  }
  napi_value result;
  if (napi_create_external_arraybuffer(env, memory, bytes, give_back, (void *)(uintptr_t)bytes,
                                       &result) != napi_ok) {
    munmap(memory, bytes);
    napi_throw_error(env, "EADDON", "slab: napi_create_external_arraybuffer failed");
    return NULL;
  }
  int64_t ignored;
  napi_adjust_external_memory(env, (int64_t)bytes, &ignored);
  return result;
}

/* Unmaps every free slab; returns the bytes unmapped. */
static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  struct free_slab out[MAX_FREE];
  size_t count, bytes;
  pthread_mutex_lock(&lock);
  count = free_count;
  bytes = free_bytes;
  memcpy(out, free_list, count * sizeof *out);
  free_count = 0;
  free_bytes = 0;
  unmapped += count;
  pthread_mutex_unlock(&lock);
  for (size_t i = 0; i < count; i++) munmap(out[i].memory, out[i].bytes);
  napi_value result;
  napi_create_double(env, (double)bytes, &result);
  return result;
}

static napi_value number(napi_env env, double value) {
  napi_value out;
  napi_create_double(env, value, &out);
  return out;
}

static napi_value stats(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&lock);
  double m = (double)mapped, r = (double)reused, u = (double)unmapped, f = (double)free_bytes;
  pthread_mutex_unlock(&lock);
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "mapped", number(env, m));
  napi_set_named_property(env, out, "reused", number(env, r));
  napi_set_named_property(env, out, "unmapped", number(env, u));
  napi_set_named_property(env, out, "freeBytes", number(env, f));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"slab", NULL, slab, NULL, NULL, NULL, napi_default, NULL},
      {"trim", NULL, trim, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

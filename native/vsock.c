/*
 * guestlink_vsock: the smallest piece of AF_VSOCK that Node cannot do itself. It only creates,
 * binds, connects and listens on vsock sockets and hands their file descriptors to JavaScript;
 * every byte is then moved by Node's own event loop (src/transport/fd-socket.ts wraps the
 * descriptor in an epoll-driven net.Socket, src/transport/fd-server.ts accepts on it).
 *
 * connect() is non-blocking and waits for the handshake in napi async work (a thread-pool
 * thread), polling the socket together with an eventfd so that cancel() ends the wait at once.
 * Errors are JavaScript Errors shaped like Node's system errors: `code` is the errno name
 * ("EAFNOSUPPORT"), `errno` the negated number, `syscall` the call that failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>
#include <node_api.h>

#define CHECK(env, call)                                                                     \
  do {                                                                                       \
    if ((call) != napi_ok) {                                                                 \
      napi_throw_error((env), "EADDON", "guestlink_vsock: " #call " failed");                \
      return NULL;                                                                           \
    }                                                                                        \
  } while (0)

/* The errno names a vsock call can produce, for `code`; anything else is "E<number>". */
static const char *errno_name(int e, char *buf, size_t size) {
  switch (e) {
#define NAME(x) \
  case x:       \
    return #x;
    NAME(EACCES) NAME(EADDRINUSE) NAME(EADDRNOTAVAIL) NAME(EAFNOSUPPORT) NAME(EAGAIN)
    NAME(EALREADY) NAME(EBADF) NAME(ECANCELED) NAME(ECONNREFUSED) NAME(ECONNRESET)
    NAME(EHOSTUNREACH) NAME(EINPROGRESS) NAME(EINTR) NAME(EINVAL) NAME(EISCONN) NAME(EMFILE)
    NAME(ENETUNREACH) NAME(ENFILE) NAME(ENOBUFS) NAME(ENODEV) NAME(ENOENT) NAME(ENOMEM)
    NAME(ENOTCONN) NAME(ENOTSOCK) NAME(ENOTTY) NAME(EOPNOTSUPP) NAME(EPERM)
    NAME(EPROTONOSUPPORT) NAME(ESOCKTNOSUPPORT) NAME(ETIMEDOUT)
#undef NAME
    default:
      snprintf(buf, size, "E%d", e);
      return buf;
  }
}

/* A Node-style system error for `err` from `syscall`; NULL (with an exception pending) if even that fails. */
static napi_value system_error(napi_env env, int err, const char *syscall) {
  char name_buf[16];
  char message[160];
  const char *name = errno_name(err, name_buf, sizeof name_buf);
  snprintf(message, sizeof message, "%s %s: %s", syscall, name, strerror(err));
  napi_value code, msg, error, errno_value, syscall_value;
  CHECK(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code));
  CHECK(env, napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg));
  CHECK(env, napi_create_error(env, code, msg, &error));
  CHECK(env, napi_create_int32(env, -err, &errno_value));
  CHECK(env, napi_set_named_property(env, error, "errno", errno_value));
  CHECK(env, napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value));
  CHECK(env, napi_set_named_property(env, error, "syscall", syscall_value));
  return error;
}

static napi_value throw_system_error(napi_env env, int err, const char *syscall) {
  napi_value error = system_error(env, err, syscall);
  if (error != NULL) napi_throw(env, error);
  return NULL;
}

/* Reads `count` uint32 arguments (CIDs, ports, milliseconds, descriptors). */
static int get_u32_args(napi_env env, napi_callback_info info, size_t count, uint32_t *out,
                        napi_value *rest) {
  napi_value argv[5];
  size_t argc = 5;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < count) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "guestlink_vsock: missing arguments");
    return -1;
  }
  for (size_t i = 0; i < count; i++) {
    napi_valuetype type;
    if (napi_typeof(env, argv[i], &type) != napi_ok || type != napi_number ||
        napi_get_value_uint32(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "guestlink_vsock: expected a number");
      return -1;
    }
  }
  if (rest != NULL) *rest = argc > count ? argv[count] : NULL;
  return 0;
}

static void fill_address(struct sockaddr_vm *addr, uint32_t cid, uint32_t port) {
  memset(addr, 0, sizeof *addr);
  addr->svm_family = AF_VSOCK;
  addr->svm_cid = cid;
  addr->svm_port = port;
}

/* listen(cid, port, backlog) -> fd: a bound, listening vsock socket (close-on-exec). */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  uint32_t args[3];
  if (get_u32_args(env, info, 3, args, NULL) != 0) return NULL;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_system_error(env, errno, "socket");
  struct sockaddr_vm addr;
  fill_address(&addr, args[0], args[1]);
  const char *failed = NULL;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    failed = "bind";
  } else if (listen(fd, args[2] > INT32_MAX ? INT32_MAX : (int)args[2]) != 0) {
    failed = "listen";
  }
  if (failed != NULL) {
    int err = errno;
    close(fd);
    return throw_system_error(env, err, failed);
  }
  napi_value result;
  CHECK(env, napi_create_int32(env, fd, &result));
  return result;
}

/* address(fd, peer) -> [cid, port] of the socket's own end, or of its peer. */
static napi_value js_address(napi_env env, napi_callback_info info) {
  uint32_t args[2];
  if (get_u32_args(env, info, 2, args, NULL) != 0) return NULL;
  struct sockaddr_vm addr;
  socklen_t len = sizeof addr;
  memset(&addr, 0, sizeof addr);
  int rc = args[1] ? getpeername((int)args[0], (struct sockaddr *)&addr, &len)
                   : getsockname((int)args[0], (struct sockaddr *)&addr, &len);
  if (rc != 0) return throw_system_error(env, errno, args[1] ? "getpeername" : "getsockname");
  napi_value result, cid, port;
  CHECK(env, napi_create_array_with_length(env, 2, &result));
  CHECK(env, napi_create_uint32(env, addr.svm_cid, &cid));
  CHECK(env, napi_create_uint32(env, addr.svm_port, &port));
  CHECK(env, napi_set_element(env, result, 0, cid));
  CHECK(env, napi_set_element(env, result, 1, port));
  return result;
}

/* localCid() -> this machine's CID, as /dev/vsock reports it. */
static napi_value js_local_cid(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_system_error(env, errno, "open");
  unsigned int cid = 0;
  if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) {
    int err = errno;
    close(fd);
    return throw_system_error(env, err, "ioctl");
  }
  close(fd);
  napi_value result;
  CHECK(env, napi_create_uint32(env, cid, &result));
  return result;
}

/* One connect in flight. Freed by the finalizer of the External that JavaScript holds. */
typedef struct {
  napi_async_work work;
  napi_ref callback;
  napi_ref self; /* keeps the External (and so this struct) alive until complete runs */
  uint32_t cid, port, timeout_ms;
  int cancel_fd; /* eventfd; written by cancel(), closed by complete (both on the main thread) */
  int done;
  int fd;
  int err;
  const char *syscall;
} connect_request;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail_connect(connect_request *req, int err, const char *syscall) {
  req->err = err;
  req->syscall = syscall;
  if (req->fd >= 0) close(req->fd);
  req->fd = -1;
}

/* On a thread-pool thread: no JavaScript here. */
static void connect_execute(napi_env env, void *data) {
  (void)env;
  connect_request *req = data;
  req->fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (req->fd < 0) {
    fail_connect(req, errno, "socket");
    return;
  }
  /* The kernel's own connect timeout (2 s by default) would otherwise cut a longer deadline short. */
  struct timeval tv = {.tv_sec = req->timeout_ms / 1000,
                       .tv_usec = (suseconds_t)(req->timeout_ms % 1000) * 1000};
  if (setsockopt(req->fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv) != 0) {
    fail_connect(req, errno, "setsockopt");
    return;
  }
  struct sockaddr_vm addr;
  fill_address(&addr, req->cid, req->port);
  if (connect(req->fd, (struct sockaddr *)&addr, sizeof addr) == 0) return;
  if (errno != EINPROGRESS) {
    fail_connect(req, errno, "connect");
    return;
  }
  const int64_t deadline = now_ms() + req->timeout_ms;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      fail_connect(req, ETIMEDOUT, "connect");
      return;
    }
    struct pollfd fds[2] = {{.fd = req->fd, .events = POLLOUT},
                            {.fd = req->cancel_fd, .events = POLLIN}};
    int n = poll(fds, 2, left > INT32_MAX ? INT32_MAX : (int)left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_connect(req, errno, "poll");
      return;
    }
    if (n == 0) continue;
    if (fds[1].revents != 0) {
      fail_connect(req, ECANCELED, "connect");
      return;
    }
    if (fds[0].revents != 0) break;
  }
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(req->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
    fail_connect(req, errno, "getsockopt");
  } else if (soerr != 0) {
    fail_connect(req, soerr, "connect");
  }
}

/* Back on the main thread: calls callback(err, fd) and lets the request be collected. */
static void connect_complete(napi_env env, napi_status status, void *data) {
  connect_request *req = data;
  req->done = 1;
  close(req->cancel_fd);
  req->cancel_fd = -1;
  if (status != napi_ok && req->err == 0) fail_connect(req, ECANCELED, "connect");

  napi_value callback, global, argv[2];
  if (napi_get_reference_value(env, req->callback, &callback) == napi_ok &&
      napi_get_global(env, &global) == napi_ok) {
    if (req->err != 0) {
      argv[0] = system_error(env, req->err, req->syscall);
      napi_get_undefined(env, &argv[1]);
    } else {
      napi_get_null(env, &argv[0]);
      napi_create_int32(env, req->fd, &argv[1]);
    }
    if (argv[0] != NULL) napi_call_function(env, global, callback, 2, argv, NULL);
  } else if (req->fd >= 0) {
    close(req->fd); /* nobody can take it */
  }
  napi_delete_reference(env, req->callback);
  napi_delete_async_work(env, req->work);
  napi_delete_reference(env, req->self); /* may free req (through the finalizer) later */
}

static void finalize_request(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/*
 * connect(cid, port, timeoutMs, callback) -> request: connects in the background and calls
 * callback(err, fd); cancel(request) makes it fail with ECANCELED at once.
 */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  uint32_t args[3];
  napi_value callback;
  if (get_u32_args(env, info, 3, args, &callback) != 0) return NULL;
  napi_valuetype type = napi_undefined;
  if (callback == NULL || napi_typeof(env, callback, &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "guestlink_vsock: expected a callback");
    return NULL;
  }
  connect_request *req = calloc(1, sizeof *req);
  if (req == NULL) return throw_system_error(env, ENOMEM, "calloc");
  req->cid = args[0];
  req->port = args[1];
  req->timeout_ms = args[2];
  req->fd = -1;
  req->cancel_fd = eventfd(0, EFD_CLOEXEC);
  if (req->cancel_fd < 0) {
    int err = errno;
    free(req);
    return throw_system_error(env, err, "eventfd");
  }
  napi_value external, name;
  if (napi_create_external(env, req, finalize_request, NULL, &external) != napi_ok) {
    close(req->cancel_fd);
    free(req);
    napi_throw_error(env, "EADDON", "guestlink_vsock: cannot create the request");
    return NULL;
  }
  /* From here the External owns req: failures below leave it to the garbage collector. */
  CHECK(env, napi_create_string_utf8(env, "guestlink_vsock.connect", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_reference(env, callback, 1, &req->callback));
  CHECK(env, napi_create_async_work(env, NULL, name, connect_execute, connect_complete, req,
                                    &req->work));
  CHECK(env, napi_create_reference(env, external, 1, &req->self));
  if (napi_queue_async_work(env, req->work) != napi_ok) {
    connect_complete(env, napi_generic_failure, req);
    return external;
  }
  return external;
}

/* cancel(request): ends a connect that is still waiting; does nothing once it finished. */
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "guestlink_vsock: expected a request");
    return NULL;
  }
  connect_request *req = data;
  if (!req->done && req->cancel_fd >= 0) {
    uint64_t one = 1;
    if (write(req->cancel_fd, &one, sizeof one) < 0) {
      return throw_system_error(env, errno, "write");
    }
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_enumerable, NULL},
      {"address", NULL, js_address, NULL, NULL, NULL, napi_enumerable, NULL},
      {"localCid", NULL, js_local_cid, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof functions / sizeof functions[0],
                                    functions));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/*
 * guestlink_spawn: starting the agent's commands without fork(). Node's child_process forks (libuv
 * uses fork() on Linux), and fork() copies the page tables of everything the agent maps: the
 * bigger the agent, the slower every command starts. posix_spawn() in glibc is clone(CLONE_VM |
 * CLONE_VFORK): the child borrows the agent's memory until it calls execve(), so starting costs
 * the same however big the agent is.
 *
 * What it gives JavaScript (src/agent/spawn-native.ts wraps it):
 *
 * - spawn(): a command with real pipes (pipe2, O_CLOEXEC) or /dev/null for stdin, stdout and
 *   stderr, or a new pseudo-terminal for all three; in a new session (so it leads its own process
 *   group, as Node's `detached: true` does, and can take a terminal as its controlling one); with
 *   no signal blocked and every signal at its default (Node ignores SIGPIPE: a command must not
 *   inherit that); in a working folder; with exactly the environment given, or the agent's own
 *   (`environ`, which Node's process.env writes through to) when given null. Returns the pid, a
 *   pidfd for it (pidfd_open, Linux 5.3; -1 where the kernel has none) and the agent's ends.
 * - reap(): waitpid(pid, WNOHANG), for when the pidfd is readable (or SIGCHLD came).
 * - poll(): a libuv poll handle on a descriptor (a pidfd, a terminal's master side) calling back
 *   into JavaScript on the agent's own event loop: no thread, no signal handler.
 * - setWindowSize(): TIOCSWINSZ on a terminal's master side (the kernel sends SIGWINCH).
 *
 * posix_spawn_file_actions_addchdir_np (glibc 2.29) is looked up at run time, so that the addon
 * loads on an older glibc too (`canChdir` says whether it is there; without it the agent starts
 * commands with a cwd through child_process). Errors are thrown as Errors with `errno` (negated,
 * as Node's are) and `syscall`; the JavaScript side names the code.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <node_api.h>
extern char **environ;
#include <uv.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define CHECK(env, call)                                                        \
  do {                                                                          \
    if ((call) != napi_ok) {                                                    \
      napi_throw_error((env), "EADDON", "guestlink_spawn: " #call " failed"); \
      return NULL;                                                              \
    }                                                                           \
  } while (0)

typedef int (*addchdir_fn)(posix_spawn_file_actions_t *, const char *);
static addchdir_fn addchdir = NULL;

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  char message[200];
  snprintf(message, sizeof message, "%s: %s", syscall, strerror(err));
  napi_value msg, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_error(env, NULL, msg, &error) != napi_ok ||
      napi_create_int32(env, -err, &errno_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok) {
    napi_throw_error(env, "EADDON", message);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

static napi_value type_error(napi_env env, const char *what) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
  return NULL;
}

/* A JavaScript string as a malloc'd C string; NULL (with an exception pending) if it is not one. */
static char *get_string(napi_env env, napi_value value) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) {
    type_error(env, "guestlink_spawn: expected a string");
    return NULL;
  }
  char *out = malloc(length + 1);
  if (out == NULL) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  napi_get_value_string_utf8(env, value, out, length + 1, &length);
  return out;
}

static void free_strings(char **list) {
  if (list == NULL) return;
  for (char **p = list; *p != NULL; p++) free(*p);
  free(list);
}

/* A JavaScript array of strings as a NULL-terminated array of malloc'd C strings. */
static char **get_string_array(napi_env env, napi_value value) {
  bool is_array = false;
  uint32_t length = 0;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, value, &length) != napi_ok) {
    type_error(env, "guestlink_spawn: expected an array of strings");
    return NULL;
  }
  char **out = calloc((size_t)length + 1, sizeof *out);
  if (out == NULL) {
    throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  for (uint32_t i = 0; i < length; i++) {
    napi_value item;
    if (napi_get_element(env, value, i, &item) != napi_ok) {
      type_error(env, "guestlink_spawn: expected an array of strings");
      free_strings(out);
      return NULL;
    }
    if ((out[i] = get_string(env, item)) == NULL) { /* the exception is pending */
      free_strings(out);
      return NULL;
    }
  }
  return out;
}

/*
 * Finds `file` the way execvp() would, in the PATH of the command's own environment (as libuv's
 * spawn does; "/usr/bin:/bin" when it has none): the first regular file this process may execute.
 * Returns 0 with a malloc'd path, or ENOENT, or EACCES when only unusable ones were found.
 */
static int find_in_path(const char *file, char *const *envp, char **found) {
  if (strchr(file, '/') != NULL) {
    *found = strdup(file);
    return *found == NULL ? ENOMEM : 0;
  }
  const char *path = "/usr/bin:/bin";
  for (char *const *e = envp; *e != NULL; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) {
      path = *e + 5;
      break;
    }
  }
  size_t file_len = strlen(file);
  int result = ENOENT;
  const char *start = path;
  for (;;) {
    const char *end = strchr(start, ':');
    size_t dir_len = end == NULL ? strlen(start) : (size_t)(end - start);
    char *candidate = malloc(dir_len + file_len + 3);
    if (candidate == NULL) return ENOMEM;
    if (dir_len == 0) {
      memcpy(candidate, file, file_len + 1); /* an empty entry is the current folder */
    } else {
      memcpy(candidate, start, dir_len);
      candidate[dir_len] = '/';
      memcpy(candidate + dir_len + 1, file, file_len + 1);
    }
    struct stat st;
    if (stat(candidate, &st) == 0) {
      if (!S_ISDIR(st.st_mode) && access(candidate, X_OK) == 0) {
        *found = candidate;
        return 0;
      }
      result = EACCES; /* as execvp: found, not usable; keep looking */
    }
    free(candidate);
    if (end == NULL) break;
    start = end + 1;
  }
  return result;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/*
 * spawn(file, argv, envp, cwd, stdio, tty) -> { pid, pidfd, fds: [in, out, err] }
 *   envp: the command's environment as NAME=value strings, or null for the agent's own: copying
 *   process.env into strings and back into C for every command was a tenth of a millisecond.
 *   stdio: three numbers, 1 for a pipe and 0 for /dev/null (stdin, stdout, stderr);
 *   tty: null, or [rows, cols]: a new pseudo-terminal is the command's stdin, stdout and stderr
 *   and its controlling terminal; fds is then [master, -1, -1].
 * The agent's ends are close-on-exec and blocking (libuv makes them non-blocking when it opens
 * them). A command that cannot be started throws: ENOENT, EACCES, ENOEXEC… with syscall "spawn".
 */
static napi_value js_spawn(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  size_t argc = 6;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return type_error(env, "guestlink_spawn: spawn takes six arguments");

  napi_value result = NULL;
  char *file = NULL, *cwd = NULL, *resolved = NULL;
  char **args = NULL, **envp_copy = NULL;
  char *no_environment[] = {NULL};
  char **envp = environ != NULL ? environ : no_environment; /* clearenv() leaves it NULL */
  int parent[3] = {-1, -1, -1}; /* the agent's ends */
  int child[3] = {-1, -1, -1};  /* the command's ends, closed here once it has them */
  int want[3] = {0, 0, 0};
  int master = -1;
  char slave_name[128] = {0};
  int tty = 0;
  uint32_t rows = 0, cols = 0;
  int actions_ready = 0, attr_ready = 0;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;

  if ((file = get_string(env, argv[0])) == NULL) goto done;
  if ((args = get_string_array(env, argv[1])) == NULL) goto done;
  napi_valuetype type;
  CHECK(env, napi_typeof(env, argv[2], &type));
  if (type != napi_null) {
    if ((envp_copy = get_string_array(env, argv[2])) == NULL) goto done;
    envp = envp_copy;
  }
  CHECK(env, napi_typeof(env, argv[3], &type));
  if (type == napi_string && (cwd = get_string(env, argv[3])) == NULL) goto done;
  for (uint32_t i = 0; i < 3; i++) {
    napi_value item;
    uint32_t flag = 0;
    if (napi_get_element(env, argv[4], i, &item) != napi_ok ||
        napi_get_value_uint32(env, item, &flag) != napi_ok) {
      type_error(env, "guestlink_spawn: stdio must be three numbers");
      goto done;
    }
    want[i] = flag != 0;
  }
  CHECK(env, napi_typeof(env, argv[5], &type));
  if (type == napi_object) {
    napi_value r, c;
    if (napi_get_element(env, argv[5], 0, &r) != napi_ok ||
        napi_get_value_uint32(env, r, &rows) != napi_ok ||
        napi_get_element(env, argv[5], 1, &c) != napi_ok ||
        napi_get_value_uint32(env, c, &cols) != napi_ok || rows > 65535 || cols > 65535) {
      type_error(env, "guestlink_spawn: tty must be [rows, cols]");
      goto done;
    }
    tty = 1;
  }
  if (cwd != NULL && addchdir == NULL) {
    throw_errno(env, ENOSYS, "posix_spawn_file_actions_addchdir_np");
    goto done;
  }

  int err = find_in_path(file, envp, &resolved);
  if (err != 0) {
    throw_errno(env, err, "spawn");
    goto done;
  }

  if (tty) {
    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) {
      throw_errno(env, errno, "posix_openpt");
      goto done;
    }
    if (grantpt(master) != 0 || unlockpt(master) != 0 ||
        ptsname_r(master, slave_name, sizeof slave_name) != 0) {
      throw_errno(env, errno, "unlockpt");
      goto done;
    }
    struct winsize size = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    if (rows > 0 && cols > 0 && ioctl(master, TIOCSWINSZ, &size) != 0) {
      throw_errno(env, errno, "ioctl");
      goto done;
    }
    /* Multi-byte characters are one character to erase, as terminal emulators set it. */
    struct termios modes;
    if (tcgetattr(master, &modes) == 0) {
      modes.c_iflag |= IUTF8;
      tcsetattr(master, TCSANOW, &modes);
    }
  } else {
    for (int i = 0; i < 3; i++) {
      if (!want[i]) continue;
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) != 0) {
        throw_errno(env, errno, "pipe2");
        goto done;
      }
      /* stdin: the command reads fds[0]; stdout, stderr: it writes fds[1]. */
      child[i] = i == 0 ? fds[0] : fds[1];
      parent[i] = i == 0 ? fds[1] : fds[0];
    }
  }

  if ((err = posix_spawn_file_actions_init(&actions)) != 0) {
    throw_errno(env, err, "posix_spawn_file_actions_init");
    goto done;
  }
  actions_ready = 1;
  if (cwd != NULL && (err = addchdir(&actions, cwd)) != 0) {
    throw_errno(env, err, "posix_spawn_file_actions_addchdir_np");
    goto done;
  }
  if (tty) {
    /* Opened after setsid() and without O_NOCTTY: it becomes the controlling terminal. */
    if ((err = posix_spawn_file_actions_addopen(&actions, 0, slave_name, O_RDWR, 0)) != 0 ||
        (err = posix_spawn_file_actions_adddup2(&actions, 0, 1)) != 0 ||
        (err = posix_spawn_file_actions_adddup2(&actions, 0, 2)) != 0) {
      throw_errno(env, err, "posix_spawn_file_actions");
      goto done;
    }
  } else {
    for (int i = 0; i < 3; i++) {
      /* dup2 leaves the copy without close-on-exec; the originals close at exec. */
      err = want[i] ? posix_spawn_file_actions_adddup2(&actions, child[i], i)
                    : posix_spawn_file_actions_addopen(&actions, i, "/dev/null", O_RDWR, 0);
      if (err != 0) {
        throw_errno(env, err, "posix_spawn_file_actions");
        goto done;
      }
    }
  }

  if ((err = posix_spawnattr_init(&attr)) != 0) {
    throw_errno(env, err, "posix_spawnattr_init");
    goto done;
  }
  attr_ready = 1;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
#ifdef __GLIBC__
  /*
   * glibc's sigfillset leaves out its two internal signals (32 and 33: SIGCANCEL, SIGSETXID), and
   * posix_spawn would start the command with them ignored, which a program not built on glibc
   * keeps. child_process leaves them at their default: so do we.
   */
  for (int sig = 32; sig <= 33 && sig < SIGRTMAX; sig++) {
    const size_t bits = 8 * sizeof(unsigned long);
    ((unsigned long *)&all)[(size_t)(sig - 1) / bits] |= 1UL << ((size_t)(sig - 1) % bits);
  }
#endif
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
#ifdef POSIX_SPAWN_SETSID
  flags |= POSIX_SPAWN_SETSID;
#else
  if (tty) {
    throw_errno(env, ENOSYS, "posix_spawn (POSIX_SPAWN_SETSID)");
    goto done;
  }
  flags |= POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setpgroup(&attr, 0);
#endif
  if ((err = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
      (err = posix_spawnattr_setsigdefault(&attr, &all)) != 0 ||
      (err = posix_spawnattr_setflags(&attr, flags)) != 0) {
    throw_errno(env, err, "posix_spawnattr");
    goto done;
  }

  pid_t pid = -1;
  err = posix_spawn(&pid, resolved, &actions, &attr, args, envp);
  if (err == ENOEXEC) {
    /* An executable without #! or a known format: run it with /bin/sh, as execvp() does (and so
     * child_process). */
    size_t n = 0;
    while (args[n] != NULL) n++;
    char **with_sh = calloc(n + 2, sizeof *with_sh);
    if (with_sh == NULL) {
      throw_errno(env, ENOMEM, "calloc");
      goto done;
    }
    with_sh[0] = "/bin/sh";
    with_sh[1] = resolved;
    for (size_t i = 1; i < n; i++) with_sh[i + 1] = args[i];
    err = posix_spawn(&pid, "/bin/sh", &actions, &attr, with_sh, envp);
    free(with_sh);
    if (err == ENOENT) err = ENOEXEC;
  }
  if (err != 0) {
    throw_errno(env, err, "spawn");
    goto done;
  }
  /* A child that already exited is a zombie until reaped: its pidfd is readable at once. */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) pidfd = -1; /* ENOSYS before Linux 5.3: the caller listens for SIGCHLD */
  if (tty) {
    parent[0] = master;
    master = -1;
  }

  napi_value out, fds, number;
  if (napi_create_object(env, &out) != napi_ok || napi_create_array_with_length(env, 3, &fds) != napi_ok) {
    napi_throw_error(env, "EADDON", "guestlink_spawn: cannot create the result");
    goto done; /* the command runs on, unreachable; the agent's ends are closed below */
  }
  napi_create_int32(env, pid, &number);
  napi_set_named_property(env, out, "pid", number);
  napi_create_int32(env, pidfd, &number);
  napi_set_named_property(env, out, "pidfd", number);
  for (int i = 0; i < 3; i++) {
    napi_create_int32(env, parent[i], &number);
    napi_set_element(env, fds, (uint32_t)i, number);
    parent[i] = -1; /* JavaScript's now */
  }
  napi_set_named_property(env, out, "fds", fds);
  result = out;

done:
  if (actions_ready) posix_spawn_file_actions_destroy(&actions);
  if (attr_ready) posix_spawnattr_destroy(&attr);
  for (int i = 0; i < 3; i++) {
    close_fd(&child[i]);
    close_fd(&parent[i]);
  }
  close_fd(&master);
  free(file);
  free(cwd);
  free(resolved);
  free_strings(args);
  free_strings(envp_copy);
  return result;
}

/* reap(pid) -> undefined while it runs, else [exitCode, null] or [null, signalNumber]. */
static napi_value js_reap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  int32_t pid = 0;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0) {
    return type_error(env, "guestlink_spawn: reap takes a pid");
  }
  int status = 0;
  pid_t got;
  do {
    got = waitpid(pid, &status, WNOHANG);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return throw_errno(env, errno, "waitpid");
  if (got == 0) return NULL;
  napi_value out, code, sig;
  CHECK(env, napi_create_array_with_length(env, 2, &out));
  CHECK(env, napi_get_null(env, &code));
  CHECK(env, napi_get_null(env, &sig));
  if (WIFEXITED(status)) CHECK(env, napi_create_int32(env, WEXITSTATUS(status), &code));
  if (WIFSIGNALED(status)) CHECK(env, napi_create_int32(env, WTERMSIG(status), &sig));
  CHECK(env, napi_set_element(env, out, 0, code));
  CHECK(env, napi_set_element(env, out, 1, sig));
  return out;
}

/* setWindowSize(fd, rows, cols): the terminal's size; its foreground group gets SIGWINCH. */
static napi_value js_set_window_size(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  uint32_t v[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return type_error(env, "guestlink_spawn: setWindowSize(fd, rows, cols)");
  for (int i = 0; i < 3; i++) {
    if (napi_get_value_uint32(env, argv[i], &v[i]) != napi_ok) {
      return type_error(env, "guestlink_spawn: setWindowSize(fd, rows, cols)");
    }
  }
  struct winsize size = {.ws_row = (unsigned short)(v[1] > 65535 ? 65535 : v[1]),
                         .ws_col = (unsigned short)(v[2] > 65535 ? 65535 : v[2])};
  if (ioctl((int)v[0], TIOCSWINSZ, &size) != 0) return throw_errno(env, errno, "ioctl");
  return NULL;
}

/* ---- poll: a libuv poll handle calling back into JavaScript -------------------------------- */

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
} poller;

/* What the External holds: the poller until it is closed. */
typedef struct {
  poller *p;
} poll_box;

static void poller_closed(uv_handle_t *handle) { free(handle->data); }

static void poller_close(napi_env env, poll_box *box) {
  poller *p = box->p;
  if (p == NULL) return;
  box->p = NULL;
  napi_delete_reference(env, p->callback);
  napi_async_destroy(env, p->context);
  uv_poll_stop(&p->handle);
  uv_close((uv_handle_t *)&p->handle, poller_closed);
}

static void poll_box_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  poller_close(env, data);
  free(data);
}

static void poller_event(uv_poll_t *handle, int status, int events) {
  poller *p = handle->data;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, global, argv[2];
  if (napi_get_reference_value(env, p->callback, &callback) == napi_ok && callback != NULL &&
      napi_get_global(env, &global) == napi_ok &&
      napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    /* make_callback: microtasks (promise reactions) run before libuv goes on. */
    if (napi_make_callback(env, p->context, global, callback, 2, argv, NULL) ==
        napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

static poll_box *get_box(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    type_error(env, "guestlink_spawn: expected a poll handle");
    return NULL;
  }
  return data;
}

/* poll(fd, callback(status, events)) -> handle: not yet polling (see pollEvents). */
static napi_value js_poll(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  int32_t fd = -1;
  napi_valuetype type = napi_undefined;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function) {
    return type_error(env, "guestlink_spawn: poll(fd, callback)");
  }
  uv_loop_t *loop = NULL;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  poller *p = calloc(1, sizeof *p);
  poll_box *box = calloc(1, sizeof *box);
  if (p == NULL || box == NULL) {
    free(p);
    free(box);
    return throw_errno(env, ENOMEM, "calloc");
  }
  int err = uv_poll_init(loop, &p->handle, fd);
  if (err != 0) {
    free(p);
    free(box);
    return throw_errno(env, -err, "uv_poll_init");
  }
  p->handle.data = p;
  p->env = env;
  box->p = p;
  napi_value external, name;
  if (napi_create_external(env, box, poll_box_finalize, NULL, &external) != napi_ok ||
      napi_create_string_utf8(env, "guestlink_spawn.poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->context) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok) {
    box->p = NULL;
    uv_close((uv_handle_t *)&p->handle, poller_closed);
    napi_throw_error(env, "EADDON", "guestlink_spawn: cannot create the poll handle");
    return NULL;
  }
  return external;
}

/* pollEvents(handle, events): 1 readable, 2 writable, 3 both; 0 stops polling. */
static napi_value js_poll_events(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  int32_t events = 0;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return type_error(env, "guestlink_spawn: pollEvents(handle, events)");
  poll_box *box = get_box(env, argv[0]);
  if (box == NULL) return NULL;
  if (napi_get_value_int32(env, argv[1], &events) != napi_ok) {
    return type_error(env, "guestlink_spawn: pollEvents(handle, events)");
  }
  if (box->p == NULL) return NULL; /* closed */
  int uv_events = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  int err = uv_events == 0 ? uv_poll_stop(&box->p->handle)
                           : uv_poll_start(&box->p->handle, uv_events, poller_event);
  if (err != 0) return throw_errno(env, -err, "uv_poll_start");
  return NULL;
}

/* pollClose(handle): stops and frees it (the descriptor itself is the caller's to close). */
static napi_value js_poll_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return type_error(env, "guestlink_spawn: pollClose(handle)");
  poll_box *box = get_box(env, argv[0]);
  if (box != NULL) poller_close(env, box);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  addchdir = (addchdir_fn)dlsym(RTLD_DEFAULT, "posix_spawn_file_actions_addchdir_np");
  napi_value can_chdir, own_environment;
  CHECK(env, napi_get_boolean(env, addchdir != NULL, &can_chdir));
  CHECK(env, napi_get_boolean(env, true, &own_environment));
  const napi_property_descriptor functions[] = {
      {"spawn", NULL, js_spawn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"reap", NULL, js_reap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setWindowSize", NULL, js_set_window_size, NULL, NULL, NULL, napi_enumerable, NULL},
      {"poll", NULL, js_poll, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollEvents", NULL, js_poll_events, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollClose", NULL, js_poll_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"canChdir", NULL, NULL, NULL, NULL, can_chdir, napi_enumerable, NULL},
      /* spawn() takes null for envp: an addon built before that lacks this, and gets strings. */
      {"ownEnvironment", NULL, NULL, NULL, NULL, own_environment, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof functions / sizeof functions[0],
                                    functions));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

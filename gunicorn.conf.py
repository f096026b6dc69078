"""gunicorn settings for TokenSite, read from the project folder: `gunicorn tokensite.wsgi --workers 4 ...`.

Command-line options override these. README.md ("Serving") says what a client meets at each limit.
"""

wsgi_app = "tokensite.wsgi:application"

# The application answers over-long URLs (414) and headers (431) itself, in JSON under /api/,
# below these hard limits (apps/core/request_limits.py: 4 KiB URL, 100 headers of at most
# 8 KiB, 32 KiB in all). Only a request past gunicorn's own limits gets its HTML error page.
limit_request_line = 8190  # gunicorn's maximum: method, URL and protocol of the request line
limit_request_fields = 200
limit_request_field_size = 16384

# Load and warm the application once, in the master, before it binds the port; workers fork
# from it warm, also those that replace a dead or recycled worker, and share its memory.
# Deploying new code therefore needs a restart of the master, not a HUP.
preload_app = True


def _warm(log) -> None:
    import gc

    from tokensite.warmup import app_warm_up

    log.info("Warming up the application")
    log.info("Application warmed up in %.1f s", app_warm_up())
    # What the warm-up loaded (litellm's price map and modules: some 435,000 objects) lives as long
    # as the process. Left in the collected generations, every full collection walks it again (1 s
    # per collection on a loaded host, inside whichever request triggered it) and touches its
    # pages, which un-shares them between forked workers. Frozen, collections skip it.
    gc.freeze()
    log.info("Froze %d warm-up objects out of garbage collection", gc.get_freeze_count())


def on_starting(server):
    if server.cfg.preload_app:
        _warm(server.log)


def post_worker_init(worker):
    # Without preload (say `--reload` while developing) each worker warms itself before it accepts.
    if not worker.cfg.preload_app:
        _warm(worker.log)

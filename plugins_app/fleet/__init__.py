"""The celery executor: worker nodes that run plugins for the whole fleet (docs/scale-out.md).

celery_app  the Celery application and its delivery settings (acks late, prefetch 1)
queues      which queue a plugin's runs go to, and which queues have a live worker
executor    CeleryExecutor: sends a run id to its plugin's queue once the run commits
tasks       the task a worker runs for a run id (the claim in the database decides)
node        a worker node's life: registered, heartbeating, reconciling, stopped
models      the Worker record
"""

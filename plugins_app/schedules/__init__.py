"""Periodic runs of plugins: a cron expression or an interval, with params and policies.

models    Schedule (declared by a plugin or made in the admin), ScheduleFiring (one per
          occurrence acted on, unique per schedule and occurrence)
timing    next occurrences from a cron expression (croniter) or an interval
service   the tick that fires due schedules through the ordinary submit path, and the
          sync of a plugin's declared schedule
scheduler the loop: a thread in the web process (embedded) or `manage.py runscheduler`
"""

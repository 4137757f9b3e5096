/** Notifications: a view of the model's events (checks finished, stage changed). */
import { Notification } from '@jupyterlab/apputils';

import { IEvent, Source } from './api';
import { HandoffModel } from './model';

export function notifyOnEvents(
  model: HandoffModel,
  openReport: (source: Source, model: string, n: number) => void
): void {
  model.eventReceived.connect((_, event: IEvent) => {
    if (!model.settings.notifications || !event.model) {
      return;
    }
    const ref = `${event.model}:${event.version}`;
    if (event.type === 'verdict') {
      const verdict = String(event.verdict ?? event.status);
      const reasons = (event.reasons as string[] | undefined) ?? [];
      const why = reasons.length ? ` (${reasons[0]})` : '';
      const text = `Handoff: checks finished for ${ref}: ${verdict}${why}`;
      const notify =
        verdict === 'pass'
          ? Notification.success
          : verdict === 'warn'
            ? Notification.warning
            : Notification.error;
      notify(text, {
        autoClose: 8000,
        actions: [
          {
            label: 'Open report',
            callback: () =>
              openReport(model.source, event.model!, event.version as number)
          }
        ]
      });
    } else if (event.type === 'stage' && event.withdrawn) {
      // a sign-off taken back: the version waits for that stage's sign-offs again
      Notification.info(
        `Handoff: ${event.by} withdrew their sign-off of ${ref} for ${event.waiting_for}`,
        { autoClose: 8000 }
      );
    } else if (event.type === 'stage') {
      const by = event.by ? ` (by ${event.by})` : '';
      Notification.info(`Handoff: ${ref} is now ${event.stage}${by}`, {
        autoClose: 8000
      });
    }
  });
}

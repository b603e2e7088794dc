/**
 * Glossary. A *job kind* is a unit of background work (generateImage, uploadToCloud, ...). Each kind
 * lives on one *queue*; a queue is a Bee-Queue in Redis with its own worker slots, which is how
 * priority works (Bee-Queue has no priorities inside a queue). This map is the single place that
 * routes kinds to queues and types their payloads, for producers and processors alike.
 */
import type { QueueName } from '../config';
import type { MailJob } from '../mail/templates';
import type { WebhookEvent } from '../webhooks/events';

export interface JobPayloads {
  generateImage: { generationId: string };
  uploadToCloud: { generationId: string };
  sendEmail: MailJob;
  /** Saves a succeeded generation's prompt and images as one exchange of its character's chat. */
  saveChatHistory: { generationId: string };
  /** POSTs one event of a generation, signed, to the receiver chosen when it was queued. */
  deliverWebhook: { generationId: string; event: WebhookEvent; url: string };
}
export type JobKind = keyof JobPayloads;

export const JOB_QUEUES = {
  generateImage: 'high_priority',
  uploadToCloud: 'normal_priority',
  sendEmail: 'low_priority',
  saveChatHistory: 'low_priority',
  // Its own queue and slots: a slow or dead receiver delays nothing else.
  deliverWebhook: 'webhooks',
} as const satisfies Record<JobKind, QueueName>;

/** What Bee-Queue stores as a job's data: the kind travels with the payload. */
export type JobEnvelope<K extends JobKind = JobKind> = { kind: K; payload: JobPayloads[K] };

/**
 * Job ids are derived from what the job is about (the generation id; for a mail, what it is for), so
 * enqueuing the same work twice is refused by Bee-Queue itself while the first job exists.
 */
export const jobId = (kind: JobKind, key: string): string => (kind === 'generateImage' ? key : `${kind}:${key}`);

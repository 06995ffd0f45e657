import { ref, watchEffect } from 'vue'
import { dictionaries, format, type Locale, type MessageKey } from './messages'
import type { QualityLevel } from '../lib/types'

const STORAGE_KEY = 'photoenhance.lang'

function initialLocale(): Locale {
  try {
    const saved = localStorage.getItem(STORAGE_KEY)
    if (saved === 'zh' || saved === 'en') return saved
  } catch {
    /* storage blocked (private mode): fall through */
  }
  return 'zh' // the product's users are Chinese
}

/** The page's language, shared by every component. */
export const locale = ref<Locale>(initialLocale())

watchEffect(() => {
  try {
    localStorage.setItem(STORAGE_KEY, locale.value)
  } catch {
    /* not persisted, still switched */
  }
  if (typeof document !== 'undefined') document.documentElement.lang = locale.value === 'zh' ? 'zh-CN' : 'en'
})

export function t(key: MessageKey, params?: Record<string, string | number>): string {
  return format(dictionaries[locale.value][key], params)
}

/** A message key for a server stage, when we have words for it. */
export function stageKey(stage: string | null | undefined): MessageKey | null {
  const key = `stage_${stage ?? ''}`
  return key in dictionaries.zh ? (key as MessageKey) : null
}

export function toggleLocale(): void {
  locale.value = locale.value === 'zh' ? 'en' : 'zh'
}

/** The name of each quality level. */
export const QUALITY_LABELS: Record<QualityLevel, MessageKey> = {
  fast: 'qualityFast',
  medium: 'qualityMedium',
  high: 'qualityHigh',
}
